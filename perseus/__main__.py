import sys

from perseus.cli.main import main

sys.exit(main())
