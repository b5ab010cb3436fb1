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

"""What ``cinder-chunked-backup`` shows while it runs, and how.

:class:`Output` prints a command's result (human lines or one JSON
object) and its errors; :class:`ProgressBar` draws throughput and ETA on
a terminal; :class:`MeteredFile` and :class:`RestoreMeter` tell the bar
how far the engine has got through a volume file.  Nothing here imports
the engine or Cinder.
"""

import datetime
import json
import logging
import os
import shutil
import sys
import time


def human_bytes(count):
    """``512 B``, ``1.5 KiB``, ``64.0 MiB``...; ``-`` for ``None``."""
    if count is None:
        return '-'
    size = float(count)
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if abs(size) < 1024 or unit == 'TiB':
            return ('%d %s' % (size, unit) if unit == 'B'
                    else '%.1f %s' % (size, unit))
        size /= 1024
    return '%d B' % count  # pragma: no cover - unreachable


def human_seconds(seconds):
    """``m:ss``, or ``h:mm:ss`` from an hour."""
    seconds = int(seconds + 0.5)
    if seconds >= 3600:
        return '%d:%02d:%02d' % (seconds // 3600, seconds // 60 % 60,
                                 seconds % 60)
    return '%d:%02d' % (seconds // 60, seconds % 60)


LOG = logging.getLogger('cinder_chunked_ext.tool.progress')


def human_time(value):
    """``2026-12-04 21:34:54 UTC``: how the tool prints every time.

    ``value`` is a datetime (naive ones are UTC, as the catalog and the
    engine write them) or ISO 8601 text; ``-`` for ``None``; text that
    does not parse is returned as it is.
    """
    if value is None or value == '':
        return '-'
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            return value
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc)
    return value.strftime('%Y-%m-%d %H:%M:%S UTC')


def plural(number, noun):
    """``1 object``, ``2 objects``."""
    return '%d %s%s' % (number, noun, '' if number == 1 else 's')


def one_line(text):
    """``text`` with every run of white space made one space."""
    return ' '.join(str(text).split())


def setup_logging(args, prog):
    """Log on stderr as ``--verbose``/``--debug`` ask; the previous state."""
    level = logging.WARNING
    if args.verbose:
        level = logging.INFO
    if args.debug:
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    if args.verbose or args.debug:
        # The tool's one form of time: UTC, and it says so.
        formatter = logging.Formatter(
            '%(asctime)s UTC %(levelname)s %(name)s: %(message)s',
            datefmt='%Y-%m-%d %H:%M:%S')
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    else:
        # Warnings read like the tool's own one-line messages.
        handler.setFormatter(logging.Formatter(
            prog + ': %(levelname)s: %(message)s'))
    root = logging.getLogger()
    previous = (list(root.handlers), root.level)
    root.handlers[:] = [handler]
    root.setLevel(level)
    return previous


def restore_logging(previous):
    root = logging.getLogger()
    root.handlers[:], level = previous
    root.setLevel(level)


class Output(object):
    """Human lines or one JSON object on stdout; errors on stderr.

    Lines on stderr start with ``prog``, the program's name.
    """

    def __init__(self, prog, json_mode, stdout=None, stderr=None):
        self.prog = prog
        self.json_mode = json_mode
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr

    def result(self, document, lines=()):
        if self.json_mode:
            self.stdout.write(json.dumps(document, indent=2, sort_keys=True,
                                         default=str) + '\n')
        else:
            for line in lines:
                self.stdout.write(line + '\n')
        self.stdout.flush()

    def say(self, line):
        """A human progress line (stdout; stderr in JSON mode)."""
        stream = self.stderr if self.json_mode else self.stdout
        stream.write(line + '\n')
        stream.flush()

    def problem(self, kind, text):
        """``<prog>: <kind>: <text>`` on stderr (text as it is)."""
        self.stderr.write('%s: %s: %s\n' % (self.prog, kind, text))
        self.stderr.flush()

    def error(self, message, code):
        """A failure: one line on stderr, and a JSON document in JSON mode."""
        self.problem('error', one_line(message))
        if self.json_mode:
            self.stdout.write(json.dumps({'error': one_line(message),
                                          'exit_code': code}) + '\n')
            self.stdout.flush()


class ProgressBar(object):
    """``label  [#####-----]  45%  29.0 MiB/64.0 MiB  35.2 MiB/s  ETA 0:01``.

    Drawn on ``stream`` only when it is a terminal, at most ten times a
    second.  Otherwise the same line is logged (INFO, so ``--verbose``
    shows it) every :attr:`LOG_INTERVAL` seconds, and once at the end,
    so that a cron log shows a long job moving.
    """

    WIDTH = 20
    INTERVAL = 0.1
    LOG_INTERVAL = 10.0

    def __init__(self, label, total, stream=None, enabled=None,
                 clock=time.monotonic):
        self.label = label
        self.total = total or 0
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = _isatty(self.stream)
        self.enabled = enabled
        self.done = 0
        self._clock = clock
        self.started = clock()
        self._drawn_at = None
        self._logged_at = self.started

    def update(self, done):
        self.done = done
        now = self._clock()
        if not self.enabled:
            if now - self._logged_at >= self.LOG_INTERVAL:
                self._log(now)
            return
        if self._drawn_at is not None and now - self._drawn_at < \
                self.INTERVAL:
            return
        self._draw(now)

    def _log(self, now):
        self._logged_at = now
        LOG.info('%s', '  '.join(p for p in self._parts(now) if p))

    def add(self, count):
        self.update(self.done + count)

    def _parts(self, now):
        """``[label, bar, amount, rate, ETA or elapsed]``."""
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        bar = None
        if self.total:
            fraction = min(1.0, self.done / self.total)
            filled = int(fraction * self.WIDTH)
            bar = '[%s%s]' % ('#' * filled, '-' * (self.WIDTH - filled))
            amount = '%3d%%  %s/%s' % (int(fraction * 100),
                                       human_bytes(self.done),
                                       human_bytes(self.total))
        else:
            amount = human_bytes(self.done)
        tail = ['%s/s' % human_bytes(rate)]
        if self.total and rate > 0 and self.done < self.total:
            tail.append('ETA %s' % human_seconds(
                (self.total - self.done) / rate))
        else:
            tail.append('%s elapsed' % human_seconds(elapsed))
        return [self.label, bar, amount] + tail

    def _draw(self, now):
        self._drawn_at = now
        label, bar, amount, *tail = self._parts(now)
        columns = shutil.get_terminal_size((80, 24)).columns - 1
        # The bar goes first, then the label, when the terminal is narrow.
        for parts in ([label, bar, amount] + tail,
                      [label, amount] + tail, [amount] + tail):
            line = '  '.join(p for p in parts if p)
            if len(line) <= columns:
                break
        self.stream.write('\r' + line[:max(10, columns)] + '\x1b[K')
        self.stream.flush()

    def close(self):
        if not self.enabled:
            if self._clock() - self.started >= self.LOG_INTERVAL:
                self._log(self._clock())
            return
        if self._drawn_at is not None:
            self._draw(self._clock())
            self.stream.write('\n')
            self.stream.flush()


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class MeteredFile(object):
    """A volume file that reports the bytes passing through it.

    The engine sees an ordinary file (read, seek, tell, write, flush,
    fileno); each call is forwarded and the callbacks learn how far the
    data has got.  With ``limit``, reading ends after that many bytes
    (a stream volume of a given size).
    """

    def __init__(self, fileobj, on_read=None, on_write=None,
                 on_flush=None, limit=None):
        self._file = fileobj
        self._limit = limit
        self._on_read = on_read
        self._on_write = on_write
        self._on_flush = on_flush
        self.position = 0
        self.bytes_read = 0
        self.highest = 0
        try:
            self.position = fileobj.tell()
        except (OSError, AttributeError, ValueError):
            self.position = 0

    def read(self, size=-1):
        if self._limit is not None:
            left = max(0, self._limit - self.bytes_read)
            size = left if size is None or size < 0 else min(size, left)
            if size == 0:
                return b''
        data = self._file.read(size)
        self.position += len(data)
        self.bytes_read += len(data)
        if self.position > self.highest:
            self.highest = self.position
        if self._on_read is not None:
            self._on_read(self)
        return data

    def seek(self, offset, whence=os.SEEK_SET):
        result = self._file.seek(offset, whence)
        self.position = result if result is not None else \
            self._file.tell()
        return result

    def tell(self):
        return self._file.tell()

    def write(self, data):
        start = self.position
        written = self._file.write(data)
        count = len(data) if written is None else written
        self.position = start + count
        if self._on_write is not None:
            self._on_write(start, count)
        return written

    def flush(self):
        self._file.flush()
        if self._on_flush is not None:
            self._on_flush()

    def fileno(self):
        return self._file.fileno()

    def truncate(self, size=None):
        return self._file.truncate(size)

    def close(self):
        self._file.close()


class RestoreMeter(object):
    """Progress of a restore: objects are flushed one after the other.

    ``plan`` is ``[(offset, length), ...]`` of the objects in the order
    the engine restores them (full backup first, metadata order); the
    engine flushes the volume after each object.
    """

    def __init__(self, plan, bar):
        self.plan = plan
        self.bar = bar
        self.index = 0
        self.finished = 0
        self.current = 0
        self.bytes_written = 0

    @property
    def total(self):
        """Bytes of all the objects of the plan."""
        return sum(length for _offset, length in self.plan)

    def on_write(self, start, count):
        self.bytes_written += count
        if self.index < len(self.plan):
            offset, length = self.plan[self.index]
            self.current = max(self.current,
                               min(length, start + count - offset))
            self.bar.update(self.finished + self.current)

    def on_flush(self):
        if self.index < len(self.plan):
            self.finished += self.plan[self.index][1]
            self.index += 1
            self.current = 0
            self.bar.update(self.finished)
