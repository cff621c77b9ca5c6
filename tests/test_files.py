"""Shipping files with %%remote: explicit, detected, content-addressed, refused (issue 2, 7)."""

from __future__ import annotations


def _setup(nb):
    (nb / "helpers.py").write_text("def shout(s):\n    return s.upper()\n")
    (nb / "data").mkdir()
    (nb / "data" / "a.txt").write_text("alpha")
    (nb / "data" / "sub").mkdir()
    (nb / "data" / "sub" / "b.txt").write_text("beta")
    (nb / "table.csv").write_text("x,y\n1,2\n")


def test_explicit_and_detected_files_arrive_and_unchanged_files_are_not_resent(kernel):
    nb = kernel.cwd
    _setup(nb)
    cell = ("%%remote -n 2 --files data/\n"
            "import helpers\n"
            "print(helpers.shout(open('data/a.txt').read()), open('data/sub/b.txt').read(),"
            " open('table.csv').read().splitlines()[1])\n")
    res = kernel.run(cell)
    assert res.status == "ok", res.outputs
    assert "[rank 0] ALPHA beta 1,2\n" in res.stdout and "[rank 1] ALPHA beta 1,2\n" in res.stdout
    summary = [line for line in res.stderr.splitlines() if line.startswith("[kremote] files:")]
    assert len(summary) == 1
    for name in ("helpers.py (", "data/a.txt (", "data/sub/b.txt (", "table.csv ("):
        assert name in summary[0]
    # the same cell again: every hash is known to the agents, no file bytes travel
    res = kernel.run(cell)
    assert res.status == "ok"
    assert "[kremote] files:" not in res.stderr
    # one changed file: only it is sent
    (nb / "helpers.py").write_text("def shout(s):\n    return s.upper() + '!'\n")
    res = kernel.run("%%remote -n 2 --files data/\n"
                     "import importlib, helpers\nimportlib.reload(helpers)\n"
                     "print(helpers.shout('x'))")
    assert "[rank 0] X!\n" in res.stdout
    sent_line = [line for line in res.stderr.splitlines() if "sent" in line][0]
    assert sent_line.endswith(f"; {2 * len((nb / 'helpers.py').read_bytes())} B sent"), sent_line


def test_no_auto_files_ships_nothing_by_itself(kernel):
    _setup(kernel.cwd)
    res = kernel.run("%%remote --no-auto-files\nimport helpers")
    assert res.status == "error"
    assert res.error["ename"] == "ModuleNotFoundError"


def _refused(kernel, line, expected):
    res = kernel.run(line + "\nran = True")
    assert res.status == "error"
    assert res.error["ename"] == "FileError"
    assert expected in res.error["evalue"], res.error["evalue"]
    assert len(res.traceback_text.strip().splitlines()) == 1  # one line, no frames
    # nothing ran
    check = kernel.run("%%remote\nprint('ran' in globals())")
    assert check.stdout == "False\n"


def test_path_outside_notebook_folder_is_refused_before_running(kernel):
    (kernel.cwd.parent / "secret.txt").write_text("no")
    _refused(kernel, "%%remote --files ../secret.txt", "resolves outside the notebook folder")


def test_missing_file_is_refused(kernel):
    _refused(kernel, "%%remote --files nothere.csv", "--files nothere.csv: no such file")


def test_file_over_size_limit_is_refused(kernel):
    (kernel.cwd / "big.bin").write_bytes(b"x" * 4096)
    _refused(kernel, "%%remote --files big.bin --max-file-size 1K",
             "big.bin: 4.0 KiB is over the 1.0 KiB file size limit")


def test_files_named_by_shell_commands_and_magics_are_shipped(kernel):
    nb = kernel.cwd
    _setup(nb)
    (nb / "tool.py").write_text("import sys\nprint('tool', open(sys.argv[1]).read())\n")
    (nb / "config.yml").write_text("k: v\n")
    res = kernel.run("%%remote\n"
                     "!head -1 table.csv\n"
                     "rows = !wc -l < data/a.txt\n"
                     "%run tool.py data/sub/b.txt\n"
                     "!cat --show-ends=no config.yml 2>/dev/null || cat config.yml\n")
    assert res.status == "ok", res.outputs
    assert res.stdout.replace("\r\n", "\n") == "x,y\ntool beta\nk: v\n"
    (summary,) = [line for line in res.stderr.splitlines() if line.startswith("[kremote] files:")]
    for name in ("table.csv (", "data/a.txt (", "tool.py (", "data/sub/b.txt (", "config.yml ("):
        assert name in summary, summary
    res = kernel.run("%%remote\n%%bash\nwc -c < helpers.py")
    assert res.stdout.strip() == str(len((nb / "helpers.py").read_bytes())), res.outputs


def test_files_globs_ship_every_match_and_a_glob_without_match_is_refused(kernel):
    nb = kernel.cwd
    _setup(nb)
    (nb / "data" / "c.txt").write_text("gamma")
    res = kernel.run("%%remote --files data/*.txt --no-auto-files\n"
                     "import glob\nprint(sorted(glob.glob('data/**', recursive=True)))")
    assert res.status == "ok", res.outputs
    assert res.stdout == "['data/', 'data/a.txt', 'data/c.txt']\n"
    _refused(kernel, "%%remote --files data/*.csv", "--files data/*.csv: matches no file")
