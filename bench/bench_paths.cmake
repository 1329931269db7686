# bench_paths (paths, copying, behaviour); kept apart from bench_circuits's rules.
add_executable(bench_paths bench_paths.c)
target_link_libraries(bench_paths PRIVATE mi ${MATH_LIBRARY})
target_compile_options(bench_paths PRIVATE ${MI_WARNINGS})
