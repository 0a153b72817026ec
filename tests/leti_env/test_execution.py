"""The executor: verdicts, LeTI feedback byte-exact, values crossing the sandbox boundary, API errors."""

from __future__ import annotations

import re

import pytest

from leti_env import ExecutionResult, Program, execute, execute_many
from leti_env.execution import STATUSES

SIMILAR = "def similar_elements(a, b):\n    return tuple(set(a) | set(b))\n"
SIMILAR_TESTS = "assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n"


def run1(pool, program, **kw) -> ExecutionResult:
    return pool.run([program], **{"timeout": 2.0, **kw})[0]


# -- feedback, byte-exact (docs/recipe.md: header, <string> frames, exception line) ------------


def test_wrong_answer_feedback_matches_letis_format(pool):
    result = run1(pool, Program(SIMILAR, SIMILAR_TESTS))
    assert result.status == "failed"
    assert result.feedback == (
        "Traceback (most recent call last):\n"
        '  File "<string>", line 4, in <module>\n'  # solution + "\n" + tests, as LeTI assembles it
        "    assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n"
        "AssertionError\n"
    )


def test_runtime_error_shows_test_frame_then_solution_frame(pool):
    program = Program("def add(a, b):\n    return a + b + missing\n", "assert add(1, 2) == 3\n")
    assert run1(pool, program).feedback == (
        "Traceback (most recent call last):\n"
        '  File "<string>", line 4, in <module>\n'
        "    assert add(1, 2) == 3\n"
        '  File "<string>", line 2, in add\n'
        "    return a + b + missing\n"
        "NameError: name 'missing' is not defined\n"
    )


def test_syntax_error_has_no_caret(pool):
    result = run1(pool, Program("def add(a, b)\n    return a + b\n", "assert add(1, 2) == 3\n"))
    assert result.status == "syntax_error"
    assert result.feedback == (
        "Traceback (most recent call last):\n"
        '  File "<string>", line 1\n'
        "    def add(a, b)\n"
        "SyntaxError: expected ':'\n"
    )


def test_timeout_early_exit_and_crash_are_one_short_line(pool):
    results = pool.run([
        Program("while True:\n    pass\n", "assert True\n"),
        Program("import sys\nsys.exit(0)\n", "assert f() == 1\nassert f() == 2\n"),
        Program("import os\nos.kill(os.getpid(), 11)\n", "assert True\n"),
    ], timeout=1.0)
    assert [r.status for r in results] == ["timeout", "exited_early", "crashed"]
    assert results[0].feedback == "TimeoutError: the program did not finish within the 1 s time limit\n"
    assert results[1].feedback == ("SystemExit: the program exited with status 0 before the tests finished "
                                   "(0 of 2 asserts ran)\n")
    assert results[2].feedback == "Fatal error: the program was killed by signal SIGSEGV (0 of 1 asserts ran)\n"


def test_early_exit_counts_the_asserts_that_ran(pool):
    program = Program("import sys\ndef f(x):\n    if x == 2:\n        sys.exit(0)\n    return x\n",
                      "assert f(1) == 1\nassert f(2) == 2\nassert f(3) == 3\n")
    result = run1(pool, program)
    assert result.status == "exited_early"
    assert "(2 of 3 asserts ran)" in result.feedback
    assert (result.asserts_run, result.total_asserts) == (2, 3)


def test_recursion_is_collapsed_like_cpython(pool):
    result = run1(pool, Program("def f(n):\n    return f(n + 1)\n", "assert f(0) == 1\n"))
    assert result.status == "error"
    assert re.search(r'  File "<string>", line 2, in f\n    return f\(n \+ 1\)\n'
                     r"  \[Previous line repeated \d+ more times\]\nRecursionError: maximum recursion depth exceeded\n$",
                     result.feedback), result.feedback


def test_long_feedback_is_truncated_once_with_one_marker_keeping_the_exception_line(pool):
    result = run1(pool, "raise ValueError('v' * 50000)\n", max_feedback_chars=500)
    whole = ("Traceback (most recent call last):\n"
             '  File "<string>", line 1, in <module>\n'
             "    raise ValueError('v' * 50000)\n"
             "ValueError: " + "v" * 50000 + "\n")
    assert len(result.feedback) <= 500
    assert result.feedback.count("characters truncated") == 1 and "more characters" not in result.feedback
    assert f"\n[... {len(whole) - 500} characters truncated ...]\n" in result.feedback  # counted on the whole text
    head, tail = result.feedback.split(f"\n[... {len(whole) - 500} characters truncated ...]\n")
    assert whole.startswith(head) and whole.endswith(tail) and tail.endswith("vvv\n")  # the exception line's end


def test_a_tests_long_assertion_message_is_cut_the_same_way(pool):
    program = Program("x = 1\n", "assert x == 2, 'q' * 9000\n")
    result = run1(pool, program, max_feedback_chars=300)
    assert result.status == "failed" and len(result.feedback) <= 300
    assert result.feedback.count("characters truncated") == 1
    assert result.feedback.endswith("qqq\n") and "AssertionError: qqq" in result.feedback


def test_feedback_is_deterministic_and_free_of_addresses_paths_and_pids(pool):
    program = Program("def f():\n    raise ValueError(repr(object()))\n", "assert f() == 1\n")
    first, second = pool.run([program, program])
    assert first.feedback == second.feedback
    assert " at 0x..." in first.feedback and not re.search(r"0x[0-9a-f]{6,}", first.feedback)
    assert "/tmp" not in first.feedback and "leti_env" not in first.feedback


def test_passing_program_has_empty_feedback(pool):
    result = run1(pool, Program("def f():\n    return 1\n", "assert f() == 1\n"))
    assert (result.passed, result.status, result.feedback, result.reward) == (True, "passed", "", 1.0)


def test_line_numbers_count_in_the_whole_program(pool):
    solution = "x = 1\n\n\n\ndef f():\n    return 2\n"
    program = Program(solution, "y = 0\nassert f() == 1\n")
    lines = program.text.splitlines()
    result = run1(pool, program)
    line = int(re.search(r"line (\d+)", result.feedback).group(1))
    assert lines[line - 1] == "assert f() == 1"


# -- what crosses the boundary ------------------------------------------------------------------


def test_plain_values_round_trip_with_their_types(pool):
    solution = (
        "import collections, decimal, fractions\n"
        "def f():\n"
        "    return (1, 2.5, float('nan'), 10**400, b'x', {1, 2}, frozenset([3]), {'a': [1]}, 3j, None, True,\n"
        "            collections.Counter('aab'), collections.deque([1, 2]), collections.OrderedDict(a=1),\n"
        "            decimal.Decimal('1.1'), fractions.Fraction(1, 3), range(3), bytearray(b'z'))\n"
    )
    tests = (
        "import collections, decimal, fractions, math\n"
        "r = f()\n"
        "assert r[:2] == (1, 2.5) and math.isnan(r[2]) and r[3] == 10**400 and r[4] == b'x'\n"
        "assert r[5] == {1, 2} and r[6] == frozenset([3]) and r[7] == {'a': [1]} and r[8] == 3j\n"
        "assert r[9] is None and r[10] is True\n"
        "assert r[11] == collections.Counter('aab') and type(r[11]) is collections.Counter\n"
        "assert r[12] == collections.deque([1, 2]) and r[13] == collections.OrderedDict(a=1)\n"
        "assert r[14] == decimal.Decimal('1.1') and r[15] == fractions.Fraction(1, 3) and r[16] == range(3)\n"
        "assert r[17] == bytearray(b'z')\n"
    )
    result = run1(pool, Program(solution, tests))
    assert result.passed, result.feedback


def test_objects_stay_in_the_sandbox_but_can_be_used(pool):
    # MBPP task 367 style: the tests build a tree from the solution's class, attribute by attribute
    solution = ("class Node:\n    def __init__(self, v):\n        self.v = v\n        self.left = None\n"
                "def depth(n):\n    return 0 if n is None else 1 + max(depth(n.left), 0)\n"
                "def gen(k):\n    yield from range(k)\n")
    tests = ("root = Node(1)\nroot.left = Node(2)\nassert depth(root) == 2\nassert root.v == 1\n"
             "assert list(gen(3)) == [0, 1, 2]\nassert sum(x for x in gen(4)) == 6\n")
    assert run1(pool, Program(solution, tests)).passed


def test_exceptions_raised_by_the_solution_can_be_caught_by_tests(pool):
    tests = "try:\n    f(-1)\n    raise AssertionError('no error')\nexcept ValueError as e:\n    assert str(e) == 'negative'\n"
    assert run1(pool, Program("def f(x):\n    if x < 0:\n        raise ValueError('negative')\n", tests)).passed


def test_entry_point_may_shadow_a_builtin_but_other_builtins_stay_pristine(pool):
    solution = "def sum(a, b):\n    return a + b\ndef set(x):\n    return 0\n"
    ok = Program(solution, "assert sum(10, 15) == 25\n", entry_points=("sum",))
    hacked = Program(solution, "assert set([1]) == set([2]) or sum(1, 2) == 3\n", entry_points=("sum",))
    results = pool.run([ok, hacked])
    assert results[0].passed, results[0].feedback
    assert results[1].passed  # `set` here is the builtin: {1} != {2}, then the real comparison passes
    assert not run1(pool, Program(solution, "assert set([1]) == set([2])\n", entry_points=("sum",))).passed


def test_types_and_builtins_can_be_passed_as_arguments(pool):
    program = Program("def keep(xs, t):\n    return [x for x in xs if isinstance(x, t)]\n",
                      "import collections\nassert keep([1, 'a', 2.0], int) == [1]\nassert keep([1], collections.Counter) == []\n")
    assert run1(pool, program).passed


def test_truthiness_of_returned_objects_is_forwarded(pool):
    program = Program("import re\ndef m(s):\n    return re.match('a+b', s)\n", "assert m('aab')\nassert not m('b')\n")
    assert run1(pool, program).passed


# A program that writes its own frames on the test channel (found by fstat) before the verifier asks.
_RAW_FRAME = (
    "import os, stat, struct\n"
    "def _socket(fd):\n"
    "    try:\n        return stat.S_ISSOCK(os.fstat(fd).st_mode)\n    except OSError:\n        return False\n"
    "body = {body}\n"
    "for fd in range(3, 64):\n"
    "    if _socket(fd):\n"
    "        os.write(fd, struct.pack('>I', len(body)) + body)\n"
    "def add(a, b):\n    return a - b\n"
)


@pytest.mark.parametrize("body, why", [
    ("b'[\"loaded\"] [\"ok\",true]'", "extra data after a message"),  # a second, forged reply glued on
    ("b' [\"loaded\"]'", "Expecting value"),  # whitespace: the framing is exact JSON, nothing around it
    ("'[\"loaded\"]'.encode('utf-16')", "codec can't decode"),  # UTF-8 only
    ("b'[\"ok\",true]'", "expected the load report"),  # a reply before any request
])
def test_raw_frames_on_the_test_channel_fail_the_program_and_the_slot_lives_on(pool, body, why):
    result = run1(pool, Program(_RAW_FRAME.format(body=body), "assert add(1, 2) == 3\n"))
    assert result.status == "error" and not result.passed
    assert "SandboxProtocolError: the program broke the test protocol" in result.feedback
    assert why in result.feedback
    assert run1(pool, Program("def add(a, b):\n    return a + b\n", "assert add(1, 2) == 3\n")).passed


# -- the API ----------------------------------------------------------------------------------


def test_module_level_execute_and_execute_many_keep_order():
    results = execute_many(["assert 1 == 1", "assert 1 == 2", "1/0"], timeout=2.0)
    assert [r.status for r in results] == ["passed", "failed", "error"]
    assert "ZeroDivisionError: division by zero" in results[2].feedback
    assert execute("pass").passed


def test_every_status_is_documented():
    assert set(STATUSES) >= {"passed", "failed", "error", "syntax_error", "timeout", "memory_exceeded", "crashed",
                             "exited_early", "output_limit", "sandbox_error"}


def test_output_is_captured_but_not_part_of_feedback(pool):
    result = run1(pool, "print('hello')\nraise ValueError('bad')\n")
    assert result.output == "hello\n" and "hello" not in result.feedback


def test_output_limit_is_opt_in(pool):
    program = "import sys\nsys.stdout.write('x' * 3 * 2**20)\n"
    assert run1(pool, program).passed
    limited = run1(pool, program, output_limit_mb=1)
    assert limited.status == "output_limit" and limited.output_bytes > 2**20


@pytest.mark.parametrize("kwargs, message", [
    ({"timeout": 0}, "`timeout` must be positive, got 0"),
    ({"timeout": -1.0}, "`timeout` must be positive"),
    ({"memory_mb": 8}, "`memory_mb` must be at least 32, got 8"),
])
def test_bad_limits_raise(pool, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        pool.run(["pass"], **kwargs)


def test_bad_program_types_raise(pool):
    with pytest.raises(TypeError, match=r"programs\[1\] must be a str or a Program, got int"):
        pool.run(["pass", 3])
    with pytest.raises(TypeError, match="Program.tests must be a str"):
        Program("x", None)
    with pytest.raises(ValueError, match="prefix"):
        Program("abc", "", prelude="xyz")


def test_unknown_disable_option_raises():
    from leti_env import ExecutorPool

    with pytest.raises(ValueError, match="unknown protections to disable"):
        ExecutorPool(1, disable=["everything"])


def test_sandbox_report_lists_protections(pool):
    report = pool.protections()
    for key in ("pid_namespace", "network_namespace", "mount_namespace", "readonly_root", "private_tmp",
                "cgroup_pids", "cgroup_memory", "unprivileged_uid", "capabilities_dropped", "notes"):
        assert key in report


def test_output_is_never_lost_when_the_run_ends_at_the_verdict(pool):
    """The zygote does not wait for a judged program to exit: its prints must be in the pipe already."""
    programs = [f"print('marker-{i}')\n" + ("raise ValueError('x')\n" if i % 2 else "") for i in range(300)]
    results = pool.run(programs)
    assert [r.output for r in results] == [f"marker-{i}\n" for i in range(300)]


def test_recursion_feedback_is_byte_identical_to_the_direct_fork_executor(pool):
    """Programs get the stack headroom they had before the spawner existed (1000-frame limit, the
    harness below them): a RecursionError's repeat count, part of the training text, is unchanged."""
    result, called = pool.run(["def f(n):\n    return f(n + 1)\nf(0)\n", Program("def f(n):\n    return f(n + 1)\n", "f(0)\n")])
    assert result.feedback.endswith("    return f(n + 1)\n  [Previous line repeated 990 more times]\n"
                                    "RecursionError: maximum recursion depth exceeded\n"), result.feedback
    # called by the tests (through the verifier), with no module frame below it: two more repeats, as before
    assert called.feedback.endswith("    return f(n + 1)\n  [Previous line repeated 992 more times]\n"
                                    "RecursionError: maximum recursion depth exceeded\n"), called.feedback


# -- one pool, several threads ------------------------------------------------------------------


def _solution_processes(pool) -> int:
    """How many solution processes of this pool are alive now (by process name, under its workers)."""
    from leti_env.execution.pool import _descendants

    count = 0
    for worker in list(pool._workers):
        for pid in _descendants(worker.proc.pid):
            try:
                with open(f"/proc/{pid}/comm") as f:
                    count += f.read().strip() == "leti-solution"
            except OSError:
                pass
    return count


def test_threads_sharing_a_pool_run_side_by_side_and_get_their_own_results():
    import threading
    import time

    from leti_env import ExecutorPool

    with ExecutorPool(2) as pool:
        pool.run(["pass"])
        sleeper = "import time\ntime.sleep(2.5)\n"
        results: dict[int, list] = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, pool.run([sleeper], timeout=10)))
                   for i in range(2)]
        for t in threads:
            t.start()
        most = 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and most < 2:  # both single-program calls are running at once
            most = max(most, _solution_processes(pool))
            time.sleep(0.02)
        for t in threads:
            t.join()
        assert most == 2, "two threads' programs did not run at the same time on a 2-worker pool"
        assert [r[0].status for r in results.values()] == ["passed", "passed"]

        # Many threads, many programs each: every call gets its own results, in its own order.
        def call(k: int) -> None:
            programs = [f"assert {k} * {j} == {k * j}" if j % 3 else f"assert {k} == -1" for j in range(12)]
            results[k] = [r.status for r in pool.run(programs)]

        threads = [threading.Thread(target=call, args=(k,)) for k in range(2, 8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k in range(2, 8):
            assert results[k] == ["failed" if j % 3 == 0 else "passed" for j in range(12)], k


def test_closing_a_pool_while_a_thread_runs_leaves_no_worker():
    import threading
    import time

    from leti_env import ExecutorPool

    pool = ExecutorPool(2)
    pool.run(["pass"] * 2)
    launchers = [w.proc for w in pool._workers]
    out: list = []
    thread = threading.Thread(target=lambda: out.extend(pool.run(["import time\ntime.sleep(1)\n"], timeout=10)))
    thread.start()
    deadline = time.monotonic() + 5
    while _solution_processes(pool) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    pool.close()  # the idle worker stops now, the busy one when its call ends
    thread.join()
    assert out[0].status == "passed"  # the running call finished normally
    assert all(p.poll() is not None for p in launchers), "a worker outlived close()"
    assert pool._workers == [] and pool._idle == []
