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

"""Feeding a command line from a FIFO, so a test controls its pace."""

import errno
import os
import time


def open_writer(testcase, path, proc, timeout=60):
    """Open ``path`` for writing once ``proc`` has opened it to read.

    Fails ``testcase`` if the process exits first or never opens it.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
        if proc.poll() is not None:
            testcase.fail('the command exited early: %s'
                          % (proc.stderr.read().decode()
                             if proc.stderr else proc.returncode))
        if time.monotonic() > deadline:
            testcase.fail('the command never opened the FIFO')
        time.sleep(0.02)
