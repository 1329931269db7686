/*
 * A shared library that leaks a symbol without the mi_ prefix, so the
 * exports test can show that check_exports.sh catches one.
 */
__attribute__((visibility("default"))) int leaked_helper(void);

int leaked_helper(void) { return 42; }
