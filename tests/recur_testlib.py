"""recur_testlib: what the Python end-to-end tests share (tests/test_*.py import it from
their own folder): a counting check and a process's descendants."""
import subprocess


class Checks:
    """check(cond, what) prints "ok"/"FAIL" and the check, counts the failures in
    check.fails, and returns cond (so a test can go on or stop on it)."""

    def __init__(self):
        self.fails = 0

    def __call__(self, cond, what):
        print(("ok   " if cond else "FAIL ") + what, flush=True)
        if not cond:
            self.fails += 1
        return cond


def descendants(pid):
    """Every process below pid (children, their children, ...), from one `ps` listing."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    kids = {}
    for i in range(0, len(out) - 1, 2):
        kids.setdefault(int(out[i + 1]), []).append(int(out[i]))
    found, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            found.append(k)
            todo.append(k)
    return found
