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

"""RabbitMQ and the four Cinder services as separate processes.

Everything listens on 127.0.0.1 and lives in one run directory (by
default ``.live/`` in the working directory, replaced at each run):
``cinder.conf``, the SQLite database, the volumes (sparse files), the
backup repository, and ``logs/`` with one log per service.

Every process is started in a session of its own, with Linux's
parent-death signal set, and stopped by its PID (its process group: a
service may fork workers) when the cluster stops, also when a test
failed.  Nothing goes through systemd, sudo or the network beyond
loopback.
"""

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

from cinder_chunked_ext.tests.live import loop_devices
from cinder_chunked_ext.tests import local_servers

HOST = local_servers.HOST
RABBIT_BIN = '/usr/lib/rabbitmq/bin'
SERVICES = ('cinder-api', 'cinder-scheduler', 'cinder-volume',
            'cinder-backup')
RUN_DIR_ENV = 'CINDER_CHUNKED_LIVE_DIR'


class ClusterError(Exception):
    """The live Cinder could not be started."""


def _preexec():  # pragma: no cover - runs in the child
    os.setsid()
    local_servers.die_with_parent()


class Process(object):
    """One child process, stopped by PID (its process group)."""

    def __init__(self, name, argv, env, log_path, cwd):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, 'ab')
        self.popen = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=_preexec)
        self.pid = self.popen.pid
        self.started = time.time()

    def alive(self):
        return self.popen.poll() is None

    def peak_rss(self):
        """VmHWM of the process in bytes (0 once it is gone)."""
        try:
            with open('/proc/%d/status' % self.pid) as f:
                for line in f:
                    if line.startswith('VmHWM:'):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signal the process group; SIGKILL it if it outlives timeout."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=30)
        # Workers forked by the service are in its group too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self._log.close()

    def kill(self):
        self.stop(sig=signal.SIGKILL)


class Rabbit(object):
    """Debian's rabbitmq-server as a plain process, on loopback only."""

    def __init__(self, workdir):
        self.workdir = os.path.join(workdir, 'rabbitmq')
        self.port, self.epmd_port, self.dist_port = \
            local_servers.free_ports(3)
        self.node = 'live%d@localhost' % self.port
        self.epmd = None
        self.server = None

    @property
    def transport_url(self):
        return 'rabbit://guest:guest@%s:%d/' % (HOST, self.port)

    def _environment(self):
        erl_args = ('-kernel inet_dist_use_interface {127,0,0,1} '
                    '-kernel inet_dist_listen_min %d '
                    '-kernel inet_dist_listen_max %d'
                    % (self.dist_port, self.dist_port))
        env = dict(os.environ)
        env.update({
            'HOME': self.workdir,
            'RABBITMQ_NODENAME': self.node,
            'RABBITMQ_MNESIA_BASE': os.path.join(self.workdir, 'mnesia'),
            'RABBITMQ_LOG_BASE': os.path.join(self.workdir, 'log'),
            'RABBITMQ_CONFIG_FILE': os.path.join(self.workdir,
                                                 'rabbitmq.conf'),
            'RABBITMQ_ENABLED_PLUGINS_FILE': os.path.join(
                self.workdir, 'enabled_plugins'),
            'RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS': erl_args,
            'RABBITMQ_CTL_ERL_ARGS': '-kernel inet_dist_use_interface '
                                     '{127,0,0,1}',
            'ERL_EPMD_ADDRESS': HOST,
            'ERL_EPMD_PORT': str(self.epmd_port),
        })
        return env

    def start(self, timeout=90):
        if not os.path.exists(os.path.join(RABBIT_BIN, 'rabbitmq-server')):
            raise ClusterError('rabbitmq-server is not installed '
                               '(apt-get install rabbitmq-server)')
        os.makedirs(os.path.join(self.workdir, 'log'), exist_ok=True)
        with open(os.path.join(self.workdir, 'rabbitmq.conf'), 'w') as f:
            f.write('listeners.tcp.1 = %s:%d\n'
                    'loopback_users.guest = true\n' % (HOST, self.port))
        with open(os.path.join(self.workdir, 'enabled_plugins'), 'w') as f:
            f.write('[].\n')
        env = self._environment()
        self.epmd = Process(
            'epmd', ['epmd', '-address', HOST, '-port',
                     str(self.epmd_port)],
            env, os.path.join(self.workdir, 'epmd.log'), self.workdir)
        self.server = Process(
            'rabbitmq', [os.path.join(RABBIT_BIN, 'rabbitmq-server')],
            env, os.path.join(self.workdir, 'server.log'), self.workdir)
        deadline = time.monotonic() + timeout
        while True:
            if not self.server.alive():
                raise ClusterError('rabbitmq-server exited: %s'
                                   % _tail(self.server.log_path))
            result = subprocess.run(
                [os.path.join(RABBIT_BIN, 'rabbitmqctl'), '-n', self.node,
                 'await_startup', '--timeout', '5'],
                env=env, capture_output=True, cwd=self.workdir)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise ClusterError('rabbitmq-server did not start: %s'
                                   % _tail(self.server.log_path))
            time.sleep(1)

    def stop(self):
        for process in (self.server, self.epmd):
            if process is not None:
                process.stop()
        self.server = self.epmd = None


def _tail(path, size=3000):
    try:
        with open(path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode('utf-8', 'replace')
    except OSError:
        return '(no log)'


def default_run_dir():
    return os.environ.get(RUN_DIR_ENV) or os.path.join(os.getcwd(), '.live')


class Cluster(object):
    """The live Cinder: :meth:`start`, then :meth:`stop` in any case."""

    def __init__(self, run_dir=None):
        self.run_dir = os.path.abspath(run_dir or default_run_dir())
        self.bin_dir = os.path.dirname(sys.executable)
        self.venv = os.path.dirname(self.bin_dir)
        self.conf_path = os.path.join(self.run_dir, 'cinder.conf')
        self.log_dir = os.path.join(self.run_dir, 'logs')
        self.volume_dir = os.path.join(self.run_dir, 'volumes')
        self.rabbit = None
        self.api_port = None
        self.processes = {}
        self.backup_options = {}
        self.peak_rss = {}
        #: Volumes are handed over as loop devices (block devices), where
        #: they can be attached here; otherwise as their files.
        self.loop_devices = False

    # -- configuration -------------------------------------------------------

    def _path(self, *names):
        return os.path.join(self.run_dir, *names)

    def write_conf(self, backup_options):
        """cinder.conf with these ``[DEFAULT]`` backup options.

        An option named ``GROUP/NAME`` goes in ``[GROUP]`` instead.
        """
        self.backup_options = dict(backup_options)
        helper = '%s --config-file %s' % (
            os.path.join(self.bin_dir, 'privsep-helper'), self.conf_path)
        backup = ''.join('%s = %s\n' % item
                         for item in sorted(self.backup_options.items())
                         if '/' not in item[0])
        grouped = {}
        for name, value in sorted(self.backup_options.items()):
            if '/' in name:
                group, option = name.split('/', 1)
                grouped.setdefault(group, []).append((option, value))
        text = textwrap.dedent('''\
            [DEFAULT]
            host = live
            my_ip = {host}
            state_path = {state}
            log_dir = {logs}
            debug = False
            transport_url = {transport}
            auth_strategy = noauth
            osapi_volume_listen = {host}
            osapi_volume_listen_port = {api_port}
            osapi_volume_workers = 1
            api_paste_config = {run}/api-paste.ini
            resource_query_filters_file = {run}/resource_filters.json
            rootwrap_config = {run}/rootwrap.conf
            enabled_backends = file
            report_interval = 5
            periodic_interval = 10
            service_down_time = 60
            # The scheduler then picks the backup service of the volume's
            # host by its service record.  Otherwise it goes by the
            # capabilities cinder-backup publishes at the end of
            # init_host -- possibly before its driver's set-up check
            # finished (a looping call), then only every 60 s: a backup
            # requested in between fails with "Service not found".
            backup_use_same_host = True
            ''').format(host=HOST, state=self._path('state'),
                        logs=self.log_dir,
                        transport=self.rabbit.transport_url,
                        api_port=self.api_port, run=self.run_dir)
        text += backup
        text += textwrap.dedent('''
            [database]
            connection = sqlite:///{run}/cinder.sqlite?timeout=60

            [oslo_concurrency]
            lock_path = {run}/locks

            [oslo_messaging_notifications]
            driver = messagingv2

            [privsep_osbrick]
            helper_command = {helper}

            [cinder_sys_admin]
            helper_command = {helper}

            [file]
            volume_driver = cinder_chunked_ext.tests.live.file_volume.\
FileVolumeDriver
            volume_backend_name = file
            file_volume_directory = {volumes}
            file_volume_loop_devices = {loops}
            ''').format(run=self.run_dir, helper=helper,
                        volumes=self.volume_dir, loops=self.loop_devices)
        for group, options in sorted(grouped.items()):
            text += '\n[%s]\n' % group
            text += ''.join('%s = %s\n' % item for item in options)
        with open(self.conf_path, 'w') as f:
            f.write(text)

    def _copy_etc(self):
        etc = os.path.join(self.venv, 'etc', 'cinder')
        for name in ('api-paste.ini', 'resource_filters.json',
                     'rootwrap.conf'):
            shutil.copy(os.path.join(etc, name), self._path(name))

    def _environment(self):
        env = dict(os.environ)
        env['PYTHONUNBUFFERED'] = '1'
        # The test volume driver is imported from this tree.
        root = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.dirname(os.path.abspath(__file__)))))
        # sqlite_site: SQLite transactions that begin IMMEDIATE (see its
        # sitecustomize).
        site = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            'sqlite_site')
        env['PYTHONPATH'] = os.pathsep.join(
            p for p in (site, root, env.get('PYTHONPATH')) if p)
        for name in ('http_proxy', 'https_proxy', 'HTTP_PROXY',
                     'HTTPS_PROXY'):
            env.pop(name, None)
        env['no_proxy'] = env['NO_PROXY'] = '127.0.0.1,localhost'
        return env

    # -- life cycle ----------------------------------------------------------

    def start(self, backup_options):
        if os.path.exists(self.run_dir):
            shutil.rmtree(self.run_dir)
        for path in (self.run_dir, self.log_dir, self.volume_dir,
                     self._path('state'), self._path('locks')):
            os.makedirs(path, exist_ok=True)
        self._copy_etc()
        self.loop_devices = loop_devices.usable(self.volume_dir)
        self.api_port = local_servers.free_ports(1)[0]
        self.rabbit = Rabbit(self.run_dir)
        self.rabbit.start()
        self.write_conf(backup_options)
        result = subprocess.run(
            [os.path.join(self.bin_dir, 'cinder-manage'), '--config-file',
             self.conf_path, 'db', 'sync'],
            env=self._environment(), capture_output=True,
            cwd=self.run_dir)
        if result.returncode:
            raise ClusterError('cinder-manage db sync failed: %s'
                               % result.stderr.decode()[-3000:])
        # Four processes write to one SQLite file: with its write-ahead
        # log, readers and a writer no longer lock each other out (the
        # API answered 500 "database is locked" while cinder-backup
        # wrote).  The mode is stored in the file.
        with contextlib.closing(sqlite3.connect(
                self._path('cinder.sqlite'))) as db:
            db.execute('PRAGMA journal_mode=WAL')
        for name in SERVICES:
            self.start_service(name)

    def start_service(self, name):
        process = Process(
            name, [os.path.join(self.bin_dir, name), '--config-file',
                   self.conf_path],
            self._environment(), self._path('logs', '%s.out' % name),
            self.run_dir)
        self.processes[name] = process
        return process

    def report_count(self, binary):
        """The service's ``report_count`` in the database (0: none).

        A service reports only once its ``init_host`` ran and its RPC
        server listens; the count survives restarts.
        """
        try:
            with contextlib.closing(sqlite3.connect(
                    self._path('cinder.sqlite'), timeout=30)) as db:
                row = db.execute(
                    'SELECT MAX(report_count) FROM services '
                    'WHERE "binary" = ? AND deleted = 0',
                    (binary,)).fetchone()
        except sqlite3.OperationalError:
            return 0
        return (row and row[0]) or 0

    def wait_reported(self, name, after, timeout=120):
        """Until the service reported more than ``after`` times."""
        deadline = time.monotonic() + timeout
        while self.report_count(name) <= after:
            process = self.processes[name]
            if not process.alive():
                raise ClusterError('%s exited: %s'
                                   % (name, _tail(process.log_path)))
            if time.monotonic() > deadline:
                raise ClusterError('%s did not report' % name)
            time.sleep(0.2)

    def stop_service(self, name, kill=False):
        process = self.processes.pop(name, None)
        if process is None:
            return
        self._record_rss(name, process)
        if kill:
            process.kill()
        else:
            process.stop()

    def _record_rss(self, name, process):
        rss = process.peak_rss()
        key = '%s[%s]' % (name, self.backup_options.get('backup_driver'))
        self.peak_rss[key] = max(self.peak_rss.get(key, 0), rss)

    def restart_backup(self, backup_options=None, kill=False):
        """Stop cinder-backup (SIGKILL with ``kill``), start it again.

        Returns once the new process reported: its ``init_host`` (the
        clean-up of interrupted operations, the capabilities sent to
        the scheduler) is done and it takes requests.
        """
        self.stop_service('cinder-backup', kill=kill)
        if backup_options is not None:
            self.write_conf(backup_options)
        count = self.report_count('cinder-backup')
        process = self.start_service('cinder-backup')
        self.wait_reported('cinder-backup', count)
        return process

    def backup_rss(self):
        process = self.processes.get('cinder-backup')
        if process is None:
            return 0
        self._record_rss('cinder-backup', process)
        return process.peak_rss()

    def log_path(self, name):
        return os.path.join(self.log_dir, '%s.log' % name)

    def stop(self):
        for name in reversed(SERVICES):
            with contextlib.suppress(Exception):
                self.stop_service(name)
        for process in list(self.processes.values()):
            with contextlib.suppress(Exception):
                process.stop()
        self.processes = {}
        if self.loop_devices:
            # What a killed service left attached.
            with contextlib.suppress(Exception):
                loop_devices.detach_all(self.volume_dir)
        if self.rabbit is not None:
            self.rabbit.stop()
            self.rabbit = None
