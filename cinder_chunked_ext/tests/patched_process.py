#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.

"""Running a test script in a fresh interpreter that patches first.

Monkey-patching must come before any import, as in ``cinder-backup``: the
scripts patch on their first lines, run, and print one JSON line last.
"""

import json
import os
import subprocess
import sys

import cinder_chunked_ext

SOURCE_ROOT = os.path.dirname(os.path.dirname(
    os.path.abspath(cinder_chunked_ext.__file__)))


def run_script(script, timeout=120):
    """Run ``script``; return the JSON its last line holds.

    Raises AssertionError with the script's error output when it fails
    (a hang ends in ``subprocess.TimeoutExpired``).
    """
    proc = subprocess.run([sys.executable, '-c', script], cwd=SOURCE_ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise AssertionError('script failed (%d): %s'
                             % (proc.returncode, proc.stderr[-3000:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])
