"""`misdtcp pktdrill` as people run it: one line per script, the summary
last, exit status 0 only when all pass, and one-sentence errors with exit
status 2 for files and arguments that are wrong."""
import subprocess
import sys

MISDTCP = [sys.executable, "-m", "misdtcp", "pktdrill"]
GOOD = "0 < S 0:0(0) win 65535 <mss 1460>\n+0 > R. 0:0(0) ack 1\n"
BAD = "0 < S 0:0(0) win 65535 <mss 1460>\n+0 > R. 0:0(0) ack 2\n"


def run(*args):
    proc = subprocess.run([*MISDTCP, *map(str, args)], capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def test_pass_and_fail_lines_and_the_summary(tmp_path):
    good, bad = tmp_path / "good.pkt", tmp_path / "bad.pkt"
    good.write_text(GOOD)
    bad.write_text(BAD)
    code, out, err = run(good, bad)
    assert code == 1 and err == ""
    assert out.splitlines() == [f"PASS {good}",
                                f"FAIL {bad}: line 2: expected ack 2, got ack 1 in > R. 0:0(0) ack 1 win 0 "
                                "at 0.000000",
                                "1 passed, 1 failed"]
    code, out, _ = run(good)
    assert code == 0 and out.splitlines()[-1] == "1 passed, 0 failed"


def test_a_directory_runs_its_scripts_and_counts_what_it_cannot_run(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.pkt").write_text("`sysctl -q net.ipv4.tcp_sack=1`\n" + GOOD)
    (tmp_path / "b.pkt").write_text(GOOD)
    (tmp_path / "notes.txt").write_text("not a script")
    code, out, _ = run("--relaxed", tmp_path)
    lines = out.splitlines()
    assert code == 0
    assert lines[:2] == [f"PASS {tmp_path / 'b.pkt'}", f"PASS {tmp_path / 'sub' / 'a.pkt'}"]
    assert lines[2].startswith("not run: 1 shell command and 0 code blocks")
    assert lines[-1] == "2 passed, 0 failed"


def test_bad_files_and_arguments_are_one_sentence_and_exit_2(tmp_path):
    for args, message in [((tmp_path / "missing.pkt",), f"there is no script or directory {tmp_path / 'missing.pkt'}"),
                          ((tmp_path,), f"there are no .pkt scripts in the directory {tmp_path}"),
                          ((), "the following arguments are required: SCRIPT"),
                          (("--strict", "x.pkt"), "unrecognized arguments: --strict")]:
        code, out, err = run(*args)
        assert code == 2 and out == ""
        assert err.strip() == f"misdtcp: {message}", err
