"""The checks of the end-to-end test scripts: one line per check, a summary, an exit status."""


class Checklist:
    def __init__(self, name):
        self.name, self.failures = name, []

    def check(self, ok, what):
        """Prints `ok` or `FAIL` and what was checked (with the figures measured)."""
        print(("ok    " if ok else "FAIL  ") + what, flush=True)
        if not ok:
            self.failures.append(what)

    def finish(self):
        """The summary line; the script's exit status."""
        if self.failures:
            print(f"{self.name}: {len(self.failures)} failed")
            return 1
        print(f"{self.name}: all passed")
        return 0
