"""Handles are never freed, nor changed, while a libmi call on them is in
flight (issue 10, item 4): close() inside a paths or attribute callback
raises MiStateError and the walk finishes on a live model; close() or
load_vocab from another thread waits until the running call returns; and
integers that do not fit a size_t are refused, never wrapped."""

import threading
import time
import unittest

import mi
from reference import random_model, tolist


class LifetimeTest(unittest.TestCase):
    def test_close_inside_a_paths_callback_raises(self):
        m = random_model()
        seen, errors = [], []

        def visit(path, circuit):
            seen.append(path)
            try:
                m.close()
            except mi.MiStateError as e:
                errors.append(e)
            return False

        paths = m.paths(callback=visit, circuits=True)
        self.assertEqual(len(errors), len(seen))
        self.assertEqual(len(paths), m.path_count())  # the walk went on to the end
        self.assertIn("inside a call", str(errors[0]))
        self.assertIsInstance(errors[0], RuntimeError)
        self.assertFalse(m.closed)
        m.close()
        self.assertTrue(m.closed)

    def test_close_inside_an_attribute_callback_raises(self):
        m = random_model()
        caught = []

        def visit(part):
            for action in (m.close, lambda: m.load_vocab_bytes(b"a\n"),
                           lambda: m.set_weight("b_U", [0.0] * 7)):
                try:
                    action()
                except mi.MiStateError as e:
                    caught.append(e)
            return False

        parts = m.attribute([1, 2, 3], token=1, callback=visit)
        self.assertEqual(len(caught), 3 * len(parts))
        total = sum(p.token_logit[-1] for p in parts)
        self.assertAlmostEqual(total, float(tolist(m.forward([1, 2, 3]))[-1][1]), places=4)
        m.close()

    def _while_a_call_runs(self, action):
        """Runs a paths walk on another thread, held inside its callback,
        and ``action`` on this one: returns whether the action finished
        while the call was still running, and the walk's outcome."""
        m = random_model()
        inside, release, outcome = threading.Event(), threading.Event(), {}

        def visit(path, circuit):
            inside.set()
            release.wait(10)
            return True  # stop after the first path

        def walk():
            try:
                outcome["paths"] = m.paths(callback=visit)
                outcome["logits"] = tolist(m.forward([1, 2]))
            except BaseException as e:  # reported to the test below
                outcome["error"] = e

        worker = threading.Thread(target=walk)
        worker.start()
        self.assertTrue(inside.wait(10))
        done = threading.Event()
        acting = threading.Thread(target=lambda: (action(m), done.set()))
        acting.start()
        early = done.wait(0.3)
        release.set()
        worker.join(10)
        acting.join(10)
        self.assertTrue(done.is_set())
        return early, outcome, m

    def test_close_from_another_thread_waits_for_the_call(self):
        early, outcome, m = self._while_a_call_runs(lambda m: m.close())
        self.assertFalse(early, "close() returned while a call on the model was running")
        # The running call finished on a live model; the close came after.
        self.assertEqual(len(outcome.get("paths", [])), 1)
        self.assertTrue(m.closed)

    def test_load_vocab_from_another_thread_waits_for_the_call(self):
        early, outcome, m = self._while_a_call_runs(
            lambda m: m.load_vocab_bytes(b"a\nb\nc\nd\ne\nf\ng\n"))
        self.assertFalse(early)
        self.assertNotIn("error", outcome)
        self.assertEqual(m.token_str(6), "g")
        m.close()

    def test_queries_from_many_threads_run_together(self):
        m = random_model()
        want = tolist(m.forward([1, 2, 3]))
        results = []

        def run():
            for _ in range(20):
                results.append(tolist(m.forward([1, 2, 3])) == want)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [True] * 80)
        m.close()

    def test_integers_beyond_size_t_are_refused(self):
        with random_model() as m:
            wrapped = tolist(m.forward([5]))
            for tokens in ([2 ** 64 + 5], [2 ** 65], [-(2 ** 64) + 5]):
                with self.assertRaises(IndexError):
                    m.forward(tokens)
            self.assertEqual(tolist(m.forward([5])), wrapped)
            with self.assertRaises(IndexError):
                m.ov(2 ** 64, 0)
            with self.assertRaises(OverflowError):
                m.repeated_tokens(1, 2 ** 64 + 1)
            with self.assertRaises(OverflowError):
                m.path_count(2 ** 64)
            with self.assertRaises(OverflowError):
                mi.set_num_threads(2 ** 64 + 2)
            with self.assertRaises(IndexError):
                m.attribute([1, 2], positions=[2 ** 64 + 1])


if __name__ == "__main__":
    unittest.main()
