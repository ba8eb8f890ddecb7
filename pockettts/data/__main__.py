import sys

from pockettts.cli.data import main

sys.exit(main())
