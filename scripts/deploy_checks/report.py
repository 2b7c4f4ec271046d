"""Check results: each check passes, fails with a message, or is skipped with a reason."""

import sys


class Report:
    """Collects results and prints one line per check, then a closing count."""

    def __init__(self):
        self.passed = 0
        self.failed = []
        self.skipped = 0

    def ok(self, name, detail=""):
        self.passed += 1
        print(f"ok    {name}" + (f" ({detail})" if detail else ""), flush=True)

    def fail(self, name, message):
        self.failed.append(name)
        print(f"FAIL  {name}\n      " + str(message).replace("\n", "\n      "), flush=True)

    def skip(self, name, reason):
        self.skipped += 1
        print(f"skip  {name}: {reason}", flush=True)

    def check(self, name, problems, detail=""):
        """Passes when `problems` is empty, else fails listing them."""
        if problems:
            self.fail(name, "\n".join(problems))
        else:
            self.ok(name, detail)

    def finish(self):
        """Prints the closing line and returns the process exit code."""
        if self.failed:
            print("failed checks: " + ", ".join(self.failed), file=sys.stderr)
        print(f"deploy-checks: {self.passed} passed, {len(self.failed)} failed, {self.skipped} skipped")
        return 1 if self.failed else 0
