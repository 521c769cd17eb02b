"""`vl2v` starts without torch: only the commands that train or embed import it, when they run."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_and_the_method_list_import_no_torch():
    probe = (
        "import sys, cli.app, student.config, student.methods as m; "
        "print(m.method_names(), sorted(n for n in sys.modules if n.split('.')[0] in ('torch', 'open_clip', 'timm')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['adip', 'erm', 'kd', 'rise', 'scmd', 'sd'] []"
