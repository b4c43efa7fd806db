"""``python -m gateway``: the same as the ``edge-gateway`` command."""

import sys

try:
    from gateway.cli import main
except KeyboardInterrupt:  # Ctrl-C while the modules load (slow on an SD card): no traceback
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main())
