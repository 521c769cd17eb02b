"""`python -m teacher_service`: the vendor with every setting from `VL2V_*` environment variables.

What `vl2v serve` runs, without the CLI: the entry point of a local vendor launched by a library
(`teacher_service.local`) or a container. A setting the service cannot run with is one line on stderr, exit 1.
"""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError

from common.errors import ConfigError, one_line

from .server import ServeFailed, serve
from .settings import Settings


def main() -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    try:
        serve(Settings())
    except ValidationError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
    except (ConfigError, ServeFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
