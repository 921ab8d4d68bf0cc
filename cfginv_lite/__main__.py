import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the libraries load: a message, not a traceback
    print("python -m cfginv_lite: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
