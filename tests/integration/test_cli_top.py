"""`taskfold top` in a pseudo-terminal on the real broker: it draws queues and agents, redraws in
place when the log changes, and quits on `q` with the terminal restored."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from taskfold.core.testing import Events
from tests.integration.test_cli import cli_env, taskfold
from tests.integration.test_cli_tasks import append

pytestmark = pytest.mark.integration
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")
HOME = "\x1b[H"  # rich's screen mode starts each frame at the top left


class Terminal:
    """A child process on a 120x40 pty; `screen()` is the text of its last full frame."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
        # A session of its own with the pty as its controlling terminal, as a shell would give it,
        # so the terminal turns Ctrl-C into SIGINT for it.
        self.process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env={**env, "TERM": "xterm"},
                                        close_fds=True, start_new_session=True,
                                        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.output = ""

    def read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                self.output += os.read(self.master, 65536).decode("utf-8", "replace")
            except OSError:  # the child closed the terminal
                pass

    def drain(self) -> None:
        """Read what the exited child left in the terminal."""
        while select.select([self.master], [], [], 0.2)[0]:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the child's side is closed and empty
                return
            if not data:
                return
            self.output += data.decode("utf-8", "replace")

    def screen(self) -> str:
        return ANSI.sub("", self.output.rsplit(HOME, 1)[-1])

    def wait_for(self, pattern: str, deadline: float = 60.0) -> str:
        """Read until the last frame matches `pattern` (a regex); the frame."""
        end = time.monotonic() + deadline
        while not re.search(pattern, self.screen()):
            assert time.monotonic() < end, f"{pattern!r} not on the screen within {deadline} s:\n{self.screen()}"
            assert self.process.poll() is None, f"top exited with {self.process.returncode}:\n{self.output}"
            self.read(0.2)
        return self.screen()

    def press(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        os.close(self.master)


async def test_top_draws_queues_and_agents_redraws_and_quits_on_q(broker, topics) -> None:
    env = cli_env(broker, topics)
    assert taskfold(env, "submit", "mail", "send", "--task-id", "m-1").returncode == 0
    e = Events(queue="mail")
    await append(broker, topics, e.join("agent-top", slots=3))
    term = Terminal([sys.executable, "-m", "taskfold", "top", "--interval", "0.2"], env)
    try:
        first = term.wait_for(r"agent-top.*mail:0/3")
        assert "taskfold top" in first and "q quits" in first
        assert re.search(r"mail\s*│\s*1\s*│", first), first  # one task waiting
        assert taskfold(env, "submit", "mail", "send", "--task-id", "m-2").returncode == 0
        await append(broker, topics, e.assign("m-1", "agent-top"))
        term.wait_for(r"mail\s*│\s*1\s*│\s*0\s*│\s*1\s*│")  # redrawn: m-2 waits, m-1 is running
        term.wait_for(r"mail:1/3")
        term.press("q")
        assert term.process.wait(timeout=20) == 0, term.output
        term.drain()
        assert "\x1b[?1049l" in term.output  # left the alternate screen: the shell's screen is back
    finally:
        term.close()


async def test_top_quits_on_ctrl_c_and_restores_the_terminal(broker, topics) -> None:
    env = cli_env(broker, topics)
    # Ctrl-C used to interrupt a frame half-written now and then (1 run in 6), leaving the
    # terminal on the alternate screen: repeat it so that such a race shows.
    for _ in range(12):
        term = Terminal([sys.executable, "-m", "taskfold", "top", "--interval", "0.1"], env)
        try:
            term.wait_for(r"no queue yet")
            term.press("\x03")  # the terminal turns it into SIGINT
            assert term.process.wait(timeout=20) == 0, term.output
            term.drain()
            assert "\x1b[?1049l" in term.output and "Traceback" not in term.output, term.output
        finally:
            term.close()
