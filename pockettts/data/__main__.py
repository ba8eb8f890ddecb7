import sys

from pockettts.data.cli import main

sys.exit(main())
