import sys

from counterpoint_demo.server import main

sys.exit(main())
