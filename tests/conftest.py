import os
import sys

# Tests import helper modules that sit beside them (harness, netns_helpers).
sys.path.insert(0, os.path.dirname(__file__))
