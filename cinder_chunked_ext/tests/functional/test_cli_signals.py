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

"""``cinder-chunked-backup`` interrupted, and on a terminal.

Ctrl-C in the middle of a backup, the demo, and the progress bar that
is drawn only on a terminal; the scratch directory and the helpers are
:mod:`cinder_chunked_ext.tests.functional.test_cli`'s.
"""

import os
import pty
import random
import signal
import subprocess
import sys
import time

from cinder_chunked_ext.tests.functional import fifo as fifo_lib
from cinder_chunked_ext.tests.functional.test_cli import CHUNK
from cinder_chunked_ext.tests.functional.test_cli import CliTestCase
from cinder_chunked_ext.tests.functional.test_cli import MiB
from cinder_chunked_ext.tests.functional.test_cli import TIMEOUT
from cinder_chunked_ext.tests.functional.test_cli import write_volume
from cinder_chunked_ext.tool import catalog


#: A ``sitecustomize`` for the command: its main thread never takes
#: SIGINT, a thread of its own does (the threads it starts later inherit
#: the main thread's mask).
SIGINT_ON_ANOTHER_THREAD = """
import signal
import threading

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _take_sigint():
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    threading.Event().wait()


threading.Thread(target=_take_sigint, daemon=True).start()
"""


def main_thread_waits_on_pipe(proc):
    """True when ``proc``'s main thread sleeps waiting for a pipe's data.

    In ``read(2)`` or in ``poll(2)``/``select(2)``: the kernel function it
    sleeps in (``/proc/PID/wchan``) is one of those.
    """
    try:
        with open('/proc/%d/wchan' % proc.pid) as f:
            wchan = f.read()
    except OSError:
        return False
    return any(word in wchan for word in ('pipe', 'poll', 'select'))


class TestInterrupt(CliTestCase):

    def data_objects(self):
        return [f for f in self.repository_files()
                if not os.path.basename(f).startswith('.') and
                '_backup_' in f]

    def written_objects(self):
        """Objects written, settled or still in their temporary files.

        A POSIX backup makes its small objects durable together, so they
        stay ``.tmp-<id>-<name>`` files until then.
        """
        return [f for f in self.repository_files()
                if '_backup_' in os.path.basename(f)]

    def interrupt_backup_waiting_on_fifo(self, ready=None):
        """Start a stream backup, feed it, SIGINT it while it waits for more.

        ``ready`` (optional) is called with the process until it returns
        True, before the signal is sent.  Returns ``(proc, stderr)``.
        """
        fifo = os.path.join(self.tmp, 'stream')
        os.mkfifo(fifo)
        cmd = ([sys.executable, '-m', 'cinder_chunked_ext'] +
               self.base_args() + ['backup', 'create', fifo, '--size', '8M'])
        proc = subprocess.Popen(cmd, env=self.env, cwd=self.tmp,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        fd = fifo_lib.open_writer(self, fifo, proc)
        os.set_blocking(fd, True)
        try:
            os.write(fd, random.Random(3).randbytes(3 * CHUNK + 10))
            deadline = time.monotonic() + 60
            while len(self.written_objects()) < 2 or (
                    ready is not None and not ready(proc)):
                self.assertIsNone(proc.poll(), 'the backup ended early')
                self.assertLess(time.monotonic(), deadline,
                                'no object was written')
                time.sleep(0.02)
            # The backup now waits for more of the volume: interrupt it.
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            os.close(fd)
        return proc, err.decode()

    def check_interrupted(self, proc, err):
        self.assertEqual(130, proc.returncode, err)
        self.assertNotIn('Traceback', err)
        self.assertIn('interrupted', err)

        records = catalog.Catalog(os.path.join(self.repo, 'catalog.sqlite3'),
                                  create=False).list()
        self.assertEqual(1, len(records))
        self.assertEqual(catalog.ERROR, records[0].status)
        self.assertEqual('interrupted', records[0].fail_reason)
        files = self.repository_files()
        self.assertEqual([], [f for f in files if f.endswith('_metadata')])
        self.assertEqual([], self.written_objects())

        # The failed backup is neither restorable nor a parent.
        _out, err = self.run_cli('restore', records[0].id,
                                 os.path.join(self.tmp, 'x.img'), expect=2)
        self.assertIn('error', err)

    def test_ctrl_c_marks_backup_error_and_leaves_no_metadata(self):
        self.check_interrupted(*self.interrupt_backup_waiting_on_fifo())

    def test_ctrl_c_not_lost_before_a_blocking_read(self):
        """A SIGINT that does not cut a blocking read short still stops it.

        Python runs the handler between bytecodes; a signal that lands
        just before the main thread's ``read()`` of the stream (on a busy
        machine, while it waits for the GIL inside a buffered read) leaves
        it pending while the read blocks.  Made certain here: the
        process's main thread blocks SIGINT, so another thread takes it,
        and the signal is sent once the main thread sleeps waiting for the
        stream.
        """
        if not os.path.exists('/proc/self/wchan'):
            self.skipTest('needs /proc/PID/wchan')
        inject = os.path.join(self.tmp, 'inject')
        os.mkdir(inject)
        with open(os.path.join(inject, 'sitecustomize.py'), 'w') as f:
            f.write(SIGINT_ON_ANOTHER_THREAD)
        self.env['PYTHONPATH'] = os.pathsep.join(
            [inject, self.env['PYTHONPATH']])
        self.check_interrupted(*self.interrupt_backup_waiting_on_fifo(
            ready=main_thread_waits_on_pipe))


class TestForPeople(CliTestCase):

    def test_demo_restores_identical_volume(self):
        workdir = os.path.join(self.tmp, 'demo')
        doc, err = self.run_json('demo', '--workdir', workdir, '--size',
                                 '16M', base=[])
        self.assertTrue(doc['ok'])
        # The restored file is sparse where the volume is zeros.
        restored = os.stat(os.path.join(workdir, 'restored.img'))
        self.assertEqual(16 * MiB, restored.st_size)
        self.assertLess(restored.st_blocks * 512, 12 * MiB)
        self.assertEqual(doc['sha256_original'], doc['sha256_restored'])
        self.assertEqual(7, len(doc['steps']))
        self.assertIn('[7/7] compare', err)
        self.assertTrue(os.path.isdir(os.path.join(workdir, 'repository')))
        self.assertFalse(os.path.exists(os.path.join(
            self.env['XDG_DATA_HOME'], 'cinder-chunked-backup')))

    def test_progress_bar_drawn_only_on_a_terminal(self):
        write_volume(self.volume)
        master, slave = pty.openpty()
        try:
            self.run_cli('backup', 'create', self.volume, stderr=slave)
            os.close(slave)
            slave = None
            drawn = b''
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                drawn += chunk
        finally:
            os.close(master)
            if slave is not None:
                os.close(slave)
        text = drawn.decode('utf-8', 'replace')
        self.assertIn('100%', text)
        self.assertIn('MiB/s', text)
        _out, err = self.run_cli('backup', 'create', self.volume)
        self.assertNotIn('%', err)
