import sys

from counterpoint_demo.server import main

if __name__ == "__main__":  # importing it (the packaging check does) starts nothing
    sys.exit(main())
