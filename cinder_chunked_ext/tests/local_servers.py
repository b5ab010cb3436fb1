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

"""What the tests' local servers (SeaweedFS, Swift) have in common.

Free ports on 127.0.0.1, a child process that dies with the test
process, and the rule for a server that cannot be had: skip the test,
or fail it under CI, where every server must run.
"""

import ctypes
import os
import signal
import socket
import unittest

HOST = '127.0.0.1'


def in_ci():
    return os.environ.get('CI', '').lower() in ('1', 'true', 'yes')


def free_ports(count):
    """``count`` distinct ports that were free on 127.0.0.1 just now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def die_with_parent():  # pragma: no cover - runs in the child
    """Ask Linux to kill the server if the test process dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def unavailable(service, reason):
    """Skip, or fail under CI, when no ``service`` server can be had."""
    message = 'no %s test server: %s' % (service, reason)
    if in_ci():
        raise RuntimeError(message)
    raise unittest.SkipTest(message)
