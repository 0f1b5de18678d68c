"""The built wheel works without the checkout: schemas and job configs ship inside it."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile

from conftest import REPO


def test_wheel_installed_without_the_repo_reads_its_schemas(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("video_features-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"extract/_schemas/videos.json", "jobs/configs/local.yaml", "jobs/configs/prod.yaml"} <= names

    # A scratch venv holding only the wheel's files; the dependencies (pyarrow, PyYAML) come from
    # this interpreter's site-packages as a plain path entry, so no editable install (which
    # points at the checkout) is seen.
    scratch = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(scratch)
    site = next(scratch.glob("lib/python*/site-packages"))
    zipfile.ZipFile(wheel).extractall(site)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    code = ("import extract, jobs, pathlib; from extract.tables.schemas import SCHEMA_DIR, get_table_schema; "
            "print(extract.__file__); print(SCHEMA_DIR); print(len(get_table_schema('videos').columns)); "
            "print((pathlib.Path(jobs.__file__).parent / 'configs' / 'local.yaml').is_file())")
    out = subprocess.run([str(scratch / "bin" / "python"), "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    module_file, schema_dir, n_columns, has_config = out.stdout.split("\n")[:4]
    assert module_file.startswith(str(site)) and schema_dir.startswith(str(site)), out.stdout
    assert int(n_columns) > 10 and has_config == "True"
