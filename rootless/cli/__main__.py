"""`python -m rootless.cli`"""

import sys

from rootless.cli import main

sys.exit(main())
