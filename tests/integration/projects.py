"""A user's project run as a person runs it: `counterpoint up --config FILE` in its own
process, against the test broker, and the other commands pointed at the same file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

EXE = str(Path(sys.executable).with_name("counterpoint"))


class ProjectUp:
    def __init__(self, config: Path, bootstrap: str, home: Path,
                 extra_env: dict[str, str] | None = None, timeout_s: float = 90.0) -> None:
        self.config = config
        self.home = home
        self.env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                    "COUNTERPOINT_HOME": str(home), "COUNTERPOINT_FETCH_MAX_WAIT_MS": "10",
                    "COLUMNS": "160", **(extra_env or {})}
        self.env.pop("COUNTERPOINT_CONFIG", None)
        home.mkdir(parents=True, exist_ok=True)
        self.log = home / "up.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([EXE, "up", "--config", str(config)], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while "all agents consuming" not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"up --config {config} did not get going:\n"
                                     f"{self.output()}\n{self.agent_logs()}")
            time.sleep(0.2)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def agent_logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted((self.home / "logs").glob("*-*.log")))

    def cli(self, *argv: str, config: bool = True, timeout_s: float = 60.0,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        args = [EXE, *argv, *(["--config", str(self.config)] if config else [])]
        done = subprocess.run(args, env=self.env, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
        if check:
            assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stderr}"
        return done

    def json_lines(self, *argv: str, config: bool = True) -> list[Any]:
        return [orjson.loads(line) for line in self.cli(*argv, config=config).stdout.splitlines()
                if line.strip()]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
