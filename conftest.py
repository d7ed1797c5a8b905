# The repository root on sys.path lets tests import yolocore and both trees by package name.
import os

# Spinning OpenMP threads make small torch passes tens of times slower on a busy 2-core machine (such as CI);
# set before any test module imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
