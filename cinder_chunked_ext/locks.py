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

"""The one place that makes the locks native worker threads take.

Under eventlet monkey-patching, ``threading.Lock()`` makes a *green*
lock.  Taken on a native thread (eventlet's tpool, where our hashing,
compression and object I/O run), a green lock raises ``greenlet.error:
Cannot switch to a different thread`` or blocks nothing and wakes nobody
(eventlet issue 432).  Every lock that code running on worker threads
takes is made here, from the thread module eventlet keeps unpatched.

A native lock taken on a green thread blocks the whole hub while it
waits, so the sections these locks guard never wait on I/O, never log
and never yield: a few assignments, a dict or list operation.

No module of the package creates ``threading.Lock()`` or ``RLock()``
itself; a unit test checks the source and, under
``cinder.monkey_patch.patch()``, every lock the modules hold.
"""

import sys
import threading


def _original_threading():
    """The unpatched ``threading`` module (the patched one if none)."""
    patcher = sys.modules.get('eventlet.patcher')
    if patcher is not None and patcher.is_monkey_patched('thread'):
        return patcher.original('threading')
    return threading


def native_lock():
    """A lock of the operating system's threads, even under eventlet."""
    return _original_threading().Lock()


def native_rlock():
    """A re-entrant lock of the operating system's threads."""
    return _original_threading().RLock()


def is_native(lock):
    """True when ``lock`` is a lock of the operating system's threads."""
    module = type(lock).__module__ or ''
    return not module.startswith('eventlet')
