"""Entry-point glue shared by the scripts of both trees."""
import sys
from pathlib import Path


def run_script(main):
    """Run main(); bad input (a missing file, an unusable yaml, label or checkpoint) ends the script with one
    line naming the file, not a traceback."""
    try:
        return main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"{Path(sys.argv[0]).name}: error: {e}")
