#!/usr/bin/env python3
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

"""Run a command while Barbican runs on 127.0.0.1 (``tox -e barbican``).

::

    python tools/with_barbican.py --python BARBICAN_PYTHON --state DIR \\
        -- stestr run barbican

Starts ``tools/run_barbican.py`` with ``BARBICAN_PYTHON`` (the Python of
a virtualenv where ``barbican`` is installed) on a free port, its state
and its log (``barbican.log``) in ``DIR``; waits until it answers; runs
the command with ``CINDER_CHUNKED_BARBICAN_URL`` set; and stops Barbican
whatever the command's outcome, also when this script is interrupted
or terminated.  Exits with the command's status, or 1 (after printing
the end of Barbican's log) when Barbican does not start.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
LISTENING = re.compile(r'barbican listening on (http://127\.0\.0\.1:\d+)')
START_SECONDS = 120
STOP_SECONDS = 10


class StartFailed(Exception):
    pass


def _terminated(signum, frame):
    # SystemExit unwinds through the ``finally`` that stops Barbican.
    raise SystemExit(128 + signum)


def _log_tail(log_path, lines=40):
    try:
        with open(log_path, errors='replace') as f:
            return ''.join(f.readlines()[-lines:])
    except OSError:
        return ''


def _answers(url):
    try:
        with urllib.request.urlopen(url + '/', timeout=5):
            return True
    except urllib.error.HTTPError:
        return True         # it answered, if not with 2xx
    except OSError:
        return False


def wait_until_listening(server, log_path, deadline):
    """The URL Barbican listens on, once it answers requests."""
    url = None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise StartFailed('Barbican exited with status %d'
                              % server.returncode)
        if url is None:
            with open(log_path, errors='replace') as f:
                found = LISTENING.search(f.read())
            url = found.group(1) if found else None
        if url is not None and _answers(url):
            return url
        time.sleep(0.2)
    raise StartFailed('Barbican did not answer within %d seconds'
                      % START_SECONDS)


def stop(server):
    """Stop Barbican and anything it started (its own process group)."""
    if server.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, STOP_SECONDS),
                      (signal.SIGKILL, None)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--python', required=True,
                        help='the Python of the virtualenv holding barbican')
    parser.add_argument('--state', required=True,
                        help='a directory for its database, configuration '
                             'and log')
    parser.add_argument('command', nargs=argparse.REMAINDER,
                        help='the command to run (after --)')
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ['--'] else args.command
    if not command:
        parser.error('no command given')
    signal.signal(signal.SIGTERM, _terminated)
    state = os.path.abspath(args.state)
    os.makedirs(state, exist_ok=True)
    log_path = os.path.join(state, 'barbican.log')
    with open(log_path, 'wb') as log:
        # In the state directory, so that nothing Barbican writes to a
        # relative path lands in the source tree.
        server = subprocess.Popen(
            [args.python, os.path.join(HERE, 'run_barbican.py'), state, '0'],
            cwd=state, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        started = time.monotonic()
        try:
            url = wait_until_listening(server, log_path,
                                       started + START_SECONDS)
        except StartFailed as e:
            print('with_barbican: %s; the end of %s:\n%s'
                  % (e, log_path, _log_tail(log_path)), file=sys.stderr)
            return 1
        print('with_barbican: Barbican answers at %s (started in %.1fs)'
              % (url, time.monotonic() - started), flush=True)
        env = dict(os.environ, CINDER_CHUNKED_BARBICAN_URL=url)
        return subprocess.call(command, env=env)
    finally:
        stop(server)


if __name__ == '__main__':
    sys.exit(main())
