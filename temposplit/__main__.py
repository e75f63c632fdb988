import sys

from temposplit.cli import main

sys.exit(main())
