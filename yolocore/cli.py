"""Entry-point glue shared by the scripts of both trees."""
import argparse
import sys
from pathlib import Path


def run_script(main):
    """Run main(); bad input (a missing file, an unusable yaml, label or checkpoint) ends the script with one
    line naming the file, not a traceback."""
    try:
        return main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"{Path(sys.argv[0]).name}: error: {e}")


def positive_int(text):
    """argparse type: an integer >= 1 (an epoch count, batch or image size), rejected at the command line."""
    return _int_at_least(text, 1)


def non_negative_int(text):
    """argparse type: an integer >= 0 (a worker count)."""
    return _int_at_least(text, 0)


def fraction(text):
    """argparse type: a number in [0, 1] (a confidence or IoU threshold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not in [0, 1]")
    return value


def _int_at_least(text, low):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} is below {low}")
    return value
