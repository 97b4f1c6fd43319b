"""Tests for python/cohort.py: reports to a file, a Unix socket and stdout in
the C++ Reporter's format, world() parsing, the checkpoint and results
directories, and atomic checkpoints found by latest_checkpoint().

Run: python3 -m unittest discover -s tests/python -v   (stdlib only)
"""
import io
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import unittest
from contextlib import redirect_stdout
from unittest import mock

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import cohort  # noqa: E402

ENV_KEYS = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
            "COHORT_REPORT_PATH", "COHORT_CHECKPOINT_DIR", "COHORT_RESULTS_DIR"]


class EnvTestCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="cohort_module_test_")
        self.env = mock.patch.dict(os.environ, {}, clear=False)
        self.env.start()
        for k in ENV_KEYS:
            os.environ.pop(k, None)
        cohort._reporter._close()

    def tearDown(self):
        cohort._reporter._close()
        self.env.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class WorldTest(EnvTestCase):
    def test_defaults_to_a_single_process(self):
        self.assertEqual(cohort.world(), {
            "rank": 0, "local_rank": 0, "world_size": 1, "local_world_size": 1,
            "master_addr": "127.0.0.1", "master_port": 0})

    def test_reads_the_torchrun_environment(self):
        os.environ.update({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1",
                           "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "10.0.0.5",
                           "MASTER_PORT": "29500"})
        self.assertEqual(cohort.world(), {
            "rank": 5, "local_rank": 1, "world_size": 8, "local_world_size": 4,
            "master_addr": "10.0.0.5", "master_port": 29500})

    def test_without_local_variables_assumes_one_host(self):
        os.environ.update({"RANK": "2", "WORLD_SIZE": "3"})
        w = cohort.world()
        self.assertEqual((w["local_rank"], w["local_world_size"]), (2, 3))

    def test_rejects_bad_values(self):
        os.environ.update({"RANK": "x"})
        with self.assertRaisesRegex(ValueError, "RANK"):
            cohort.world()
        os.environ.update({"RANK": "3", "WORLD_SIZE": "2"})
        with self.assertRaisesRegex(ValueError, "RANK=3"):
            cohort.world()
        os.environ.update({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
                           "LOCAL_WORLD_SIZE": "1"})
        with self.assertRaisesRegex(ValueError, "LOCAL_RANK=1"):
            cohort.world()


class ReportTest(EnvTestCase):
    def lines(self, path):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f.read().splitlines()]

    def test_file_lines_have_rank_and_time_first(self):
        path = os.path.join(self.tmp, "metrics.jsonl")
        os.environ.update({"COHORT_REPORT_PATH": path, "RANK": "3", "WORLD_SIZE": "4"})
        before = time.time()
        cohort.report(epoch=1, epochs=10, train_loss=0.5)
        cohort.report({"epoch": 2, "note": "ok"}, train_loss=0.25)
        with open(path, encoding="utf-8") as f:
            raw = f.read().splitlines()
        self.assertEqual(len(raw), 2)
        self.assertTrue(raw[0].startswith('{"rank":3,"time":'), raw[0])
        self.assertNotIn(" ", raw[0])  # compact, like nlohmann's dump()
        first, second = [json.loads(r) for r in raw]
        self.assertEqual(list(first), ["rank", "time", "epoch", "epochs", "train_loss"])
        self.assertGreaterEqual(first["time"], before)
        self.assertLessEqual(first["time"], time.time())
        self.assertEqual(first["epoch"], 1)
        self.assertEqual(second["note"], "ok")
        self.assertEqual(second["train_loss"], 0.25)

    def test_nan_and_infinity_are_null(self):
        path = os.path.join(self.tmp, "m.jsonl")
        os.environ["COHORT_REPORT_PATH"] = path
        cohort.report(loss=float("nan"), up=float("inf"), down=-math.inf,
                      nested={"a": [1.0, float("nan")]})
        with open(path, encoding="utf-8") as f:
            raw = f.read()
        self.assertNotIn("NaN", raw)
        self.assertNotIn("Infinity", raw)
        line = json.loads(raw)
        self.assertIsNone(line["loss"])
        self.assertIsNone(line["up"])
        self.assertIsNone(line["down"])
        self.assertEqual(line["nested"], {"a": [1.0, None]})

    def test_scalar_objects_with_item_are_unwrapped(self):
        class FakeTensor:
            def __init__(self, v):
                self.v = v

            def item(self):
                return self.v

        path = os.path.join(self.tmp, "m.jsonl")
        os.environ["COHORT_REPORT_PATH"] = path
        cohort.report(loss=FakeTensor(0.125), bad=FakeTensor(float("nan")))
        line = self.lines(path)[0]
        self.assertEqual(line["loss"], 0.125)
        self.assertIsNone(line["bad"])

    def test_reserved_names_and_bad_values_are_rejected(self):
        os.environ["COHORT_REPORT_PATH"] = os.path.join(self.tmp, "m.jsonl")
        with self.assertRaisesRegex(ValueError, "reserved"):
            cohort.report(rank=1)
        with self.assertRaisesRegex(ValueError, "reserved"):
            cohort.report({"time": 1})
        with self.assertRaises(TypeError):
            cohort.report(obj=object())
        with self.assertRaises(TypeError):
            cohort.report([1, 2])
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "m.jsonl")))

    def test_stdout_without_a_path(self):
        out = io.StringIO()
        with redirect_stdout(out):
            cohort.report(step=7)
        line = json.loads(out.getvalue())
        self.assertEqual((line["rank"], line["step"]), (0, 7))
        self.assertTrue(out.getvalue().endswith("\n"))

    def test_unwritable_path_raises_naming_it(self):
        path = os.path.join(self.tmp, "no", "such", "dir", "m.jsonl")
        os.environ["COHORT_REPORT_PATH"] = path
        with self.assertRaises(OSError) as cm:
            cohort.report(x=1)
        self.assertIn(path, str(cm.exception))

    def test_unix_socket_keeps_one_connection(self):
        path = os.path.join(self.tmp, "report.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(4)
        received = []
        connections = []

        def serve():
            conn, _ = server.accept()
            connections.append(conn)
            buf = b""
            while buf.count(b"\n") < 3:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                buf += chunk
            received.append(buf)

        t = threading.Thread(target=serve)
        t.start()
        os.environ.update({"COHORT_REPORT_PATH": path, "RANK": "1", "WORLD_SIZE": "2"})
        for epoch in range(1, 4):
            cohort.report(epoch=epoch, train_loss=1.0 / epoch)
        t.join(timeout=10)
        self.assertFalse(t.is_alive())
        server.settimeout(0.2)
        with self.assertRaises(socket.timeout):
            server.accept()  # no second connection was made
        lines = [json.loads(line) for line in received[0].decode().splitlines()]
        self.assertEqual([line["epoch"] for line in lines], [1, 2, 3])
        self.assertTrue(all(line["rank"] == 1 for line in lines))
        for c in connections:
            c.close()
        server.close()

    def test_socket_reconnects_after_the_listener_goes_away(self):
        path = os.path.join(self.tmp, "report.sock")

        def listen():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(path)
            s.listen(1)
            return s

        server = listen()
        os.environ["COHORT_REPORT_PATH"] = path
        cohort.report(a=1)
        conn, _ = server.accept()
        self.assertIn(b'"a":1', conn.recv(4096))
        conn.close()
        server.close()
        os.unlink(path)
        # Writes to the dead connection fail (maybe not the first: the kernel
        # may buffer it), and a failure drops the connection.
        with self.assertRaises(OSError):
            for _ in range(50):
                cohort.report(b=2)
                time.sleep(0.01)
        server = listen()
        cohort.report(c=3)  # a new connection
        conn, _ = server.accept()
        self.assertIn(b'"c":3', conn.recv(4096))
        conn.close()
        server.close()


class DirectoriesTest(EnvTestCase):
    def test_unset_is_none(self):
        self.assertIsNone(cohort.checkpoint_dir())
        self.assertIsNone(cohort.results_dir())
        self.assertIsNone(cohort.latest_checkpoint())

    def test_created_when_missing(self):
        ckpt = os.path.join(self.tmp, "a", "ckpt")
        res = os.path.join(self.tmp, "b", "results")
        os.environ.update({"COHORT_CHECKPOINT_DIR": ckpt, "COHORT_RESULTS_DIR": res})
        self.assertEqual(cohort.checkpoint_dir(), ckpt)
        self.assertEqual(cohort.results_dir(), res)
        self.assertTrue(os.path.isdir(ckpt))
        self.assertTrue(os.path.isdir(res))

    def test_file_uris_become_paths(self):
        res = os.path.join(self.tmp, "c", "results")
        os.environ["COHORT_RESULTS_DIR"] = "file://" + res
        self.assertEqual(cohort.results_dir(), res)
        self.assertTrue(os.path.isdir(res))
        self.assertFalse(os.path.exists("file:"))


class CheckpointTest(EnvTestCase):
    def setUp(self):
        super().setUp()
        self.root = os.path.join(self.tmp, "ckpt")
        os.environ["COHORT_CHECKPOINT_DIR"] = self.root

    def make(self, name, state='{"epoch": 1}'):
        path = os.path.join(self.root, name)
        os.makedirs(path, exist_ok=True)
        if state is not None:
            with open(os.path.join(path, "state.json"), "w") as f:
                f.write(state)
        return path

    def test_missing_root_is_none(self):
        self.assertIsNone(cohort.latest_checkpoint())

    def test_highest_complete_epoch_wins(self):
        self.make("checkpoint_000002")
        best = self.make("checkpoint_000010")
        self.make("checkpoint_000011", state=None)        # no state.json: incomplete
        self.make("checkpoint_000012", state="{broken")   # unparseable: incomplete
        self.make(".tmp_checkpoint_13_99")                # being written
        self.make("checkpoint_final")                     # not a checkpoint name
        self.assertEqual(cohort.latest_checkpoint(), best)
        self.assertEqual(cohort.latest_checkpoint(self.root), best)

    def test_replaced_directory_counts_until_its_successor_exists(self):
        self.make("checkpoint_000003")
        replaced = self.make(".replaced_checkpoint_4_123")
        self.assertEqual(cohort.latest_checkpoint(), replaced)
        final = self.make("checkpoint_000004")
        self.assertEqual(cohort.latest_checkpoint(), final)

    def test_new_checkpoint_is_atomic_and_matches_the_cpp_layout(self):
        with cohort.new_checkpoint(3, state={"seed": 7, "loss": float("nan")}) as tmp:
            self.assertTrue(os.path.basename(tmp).startswith(".tmp_checkpoint_3_"))
            with open(os.path.join(tmp, "weights.bin"), "wb") as f:
                f.write(b"w3")
            self.assertIsNone(cohort.latest_checkpoint())  # not visible yet
        path = cohort.latest_checkpoint()
        self.assertEqual(path, os.path.join(self.root, "checkpoint_000003"))
        self.assertEqual(cohort.checkpoint_state(path),
                         {"epoch": 3, "format": 1, "extra": {"seed": 7, "loss": None}})
        with open(os.path.join(path, "weights.bin"), "rb") as f:
            self.assertEqual(f.read(), b"w3")
        self.assertEqual(sorted(os.listdir(self.root)), ["checkpoint_000003"])

    def test_failed_checkpoint_leaves_nothing(self):
        with cohort.new_checkpoint(1) as tmp:
            pass
        with self.assertRaises(RuntimeError):
            with cohort.new_checkpoint(2) as tmp:
                open(os.path.join(tmp, "half"), "w").close()
                raise RuntimeError("disk full")
        self.assertEqual(sorted(os.listdir(self.root)), ["checkpoint_000001"])

    def test_same_epoch_is_replaced(self):
        for content in (b"old", b"new"):
            with cohort.new_checkpoint(5) as tmp:
                with open(os.path.join(tmp, "w"), "wb") as f:
                    f.write(content)
        path = cohort.latest_checkpoint()
        with open(os.path.join(path, "w"), "rb") as f:
            self.assertEqual(f.read(), b"new")
        self.assertEqual(sorted(os.listdir(self.root)), ["checkpoint_000005"])

    def test_without_a_root_new_checkpoint_refuses(self):
        del os.environ["COHORT_CHECKPOINT_DIR"]
        with self.assertRaises(RuntimeError):
            with cohort.new_checkpoint(1):
                pass


if __name__ == "__main__":
    unittest.main()
