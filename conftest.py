# The repository root on sys.path lets tests import yolocore and both trees by package name.
