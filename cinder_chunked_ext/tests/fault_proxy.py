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

"""A fault-injecting HTTP proxy on 127.0.0.1, for tests.

It sits between a client (boto3) and a real server and decides, request
by request, what happens to it:

* :data:`PASS` forwards the request and relays the answer;
* :func:`respond` answers itself with an HTTP status and an S3 XML error
  body (``SlowDown``, ``InternalError``, ``ServiceUnavailable``...), and
  the server never sees the request;
* :func:`reset_request` forwards the request head and the first bytes of
  its body, then resets both connections (an upload that breaks off);
* :func:`reset_response` forwards the request, relays the answer's head
  and the first bytes of its body, then resets the client's connection
  (a download that breaks off).

:class:`Rule` objects pick the action from the method, path and query of
a request, and apply it a bounded number of times.  Every connection
carries one request: the proxy sends ``Connection: close`` both ways, so
request boundaries never have to be guessed on a kept-alive connection.
``counters`` counts the actions taken and ``requests`` records what was
seen, so tests prove faults were injected and retried.

The proxy is bounded: connections and recorded requests are capped,
sockets time out, and it stops by itself after ``lifetime`` seconds;
its threads are daemons, and :meth:`FaultProxy.stop` (called by
:class:`FaultProxyFixture` at clean-up) closes every open socket.
"""

import collections
import contextlib
import dataclasses
import fcntl
import re
import socket
import struct
import termios
import threading
import time
import typing
import urllib.parse

import fixtures

HOST = '127.0.0.1'
MAX_HEAD_BYTES = 64 * 1024
COPY_BYTES = 64 * 1024

#: Headers that describe one hop; the proxy sets its own.
_HOP_HEADERS = frozenset(['connection', 'keep-alive', 'proxy-connection',
                          'expect', 'te', 'upgrade'])

_REASONS = {400: 'Bad Request', 403: 'Forbidden', 404: 'Not Found',
            429: 'Too Many Requests', 500: 'Internal Server Error',
            502: 'Bad Gateway', 503: 'Service Unavailable',
            504: 'Gateway Timeout'}

#: The S3 error code usually sent with a status.
DEFAULT_CODES = {500: 'InternalError', 503: 'ServiceUnavailable',
                 429: 'SlowDown', 400: 'BadRequest', 403: 'AccessDenied',
                 404: 'NoSuchKey'}


class ProxyError(Exception):
    """A connection the proxy cannot handle (bad request, lost peer)."""


class _InjectedReset(Exception):
    """Reset the connections now, as an action asked."""


# -- actions ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Action:
    """What the proxy does with one request."""

    kind: str
    status: int = 0
    code: str = ''
    message: str = ''
    after_bytes: int = 0


PASS = Action('pass')


def respond(status, code=None, message=None):
    """Answer ``status`` with an S3 XML error body of ``code``."""
    code = code or DEFAULT_CODES.get(status, 'InternalError')
    return Action('respond', status=status, code=code,
                  message=message or 'injected by the fault proxy')


def reset_request(after_bytes):
    """Forward ``after_bytes`` of the request body, then reset."""
    return Action('reset_request', after_bytes=after_bytes)


def reset_response(after_bytes):
    """Relay ``after_bytes`` of the response body, then reset."""
    return Action('reset_response', after_bytes=after_bytes)


# -- requests and rules -----------------------------------------------------

@dataclasses.dataclass
class Request:
    """What the proxy saw of one request, and what it did."""

    method: str
    path: str
    query: str
    headers: typing.Dict[str, str]
    action: str = 'pass'
    rule: typing.Optional[str] = None

    @property
    def key(self):
        """The path without its leading ``/``, URL-decoded."""
        return urllib.parse.unquote(self.path.lstrip('/'))


class Rule:
    """Applies ``action`` to matching requests, a bounded number of times.

    :param method: the HTTP method (any when None).
    :param path: a regular expression searched in the decoded path.
    :param query: a regular expression searched in the query string;
        ``''`` matches only requests without a query.
    :param times: how many matching requests get the action (all when
        None).
    :param skip: how many matching requests pass untouched first.
    :param name: for counters and messages.
    """

    def __init__(self, action, method=None, path=None, query=None,
                 times=None, skip=0, name=None):
        self.action = action
        self.method = method.upper() if method else None
        self.path = re.compile(path) if path else None
        self.query = query
        self._query_re = re.compile(query) if query else None
        self.times = times
        self.skip = skip
        self.name = name or action.kind
        self.seen = 0
        self.applied = 0

    def matches(self, request):
        if self.method and request.method != self.method:
            return False
        if self.path and not self.path.search(
                urllib.parse.unquote(request.path)):
            return False
        if self.query == '':
            return not request.query
        if self._query_re and not self._query_re.search(request.query):
            return False
        return True

    def take(self, request):
        """Count ``request``; True when the action applies to it."""
        if not self.matches(request):
            return False
        self.seen += 1
        if self.seen <= self.skip:
            return False
        if self.times is not None and self.applied >= self.times:
            return False
        self.applied += 1
        return True

    @property
    def exhausted(self):
        return self.times is not None and self.applied >= self.times

    def __repr__(self):
        return '<Rule %s applied %d/%s>' % (self.name, self.applied,
                                            self.times)


# -- HTTP plumbing ----------------------------------------------------------

def _recv_head(sock, buffered=b''):
    """``(head, rest)``: bytes up to the blank line, and what followed."""
    data = bytearray(buffered)
    while True:
        end = data.find(b'\r\n\r\n')
        if end >= 0:
            return bytes(data[:end + 4]), bytes(data[end + 4:])
        if len(data) > MAX_HEAD_BYTES:
            raise ProxyError('head larger than %d bytes' % MAX_HEAD_BYTES)
        chunk = sock.recv(COPY_BYTES)
        if not chunk:
            if data:
                raise ProxyError('connection closed inside a head')
            return None, b''
        data += chunk


def _parse_head(head):
    """``(start line, [(name, value), ...])`` of an HTTP head."""
    lines = head[:-4].decode('iso-8859-1').split('\r\n')
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(':')
        if not sep:
            raise ProxyError('malformed header line %r' % line)
        headers.append((name.strip(), value.strip()))
    return lines[0], headers


def _build_head(start, headers):
    lines = [start] + ['%s: %s' % (n, v) for n, v in headers]
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('iso-8859-1')


def _close_headers(headers):
    """``headers`` without hop-by-hop ones, with ``Connection: close``."""
    kept = [(n, v) for n, v in headers if n.lower() not in _HOP_HEADERS]
    return kept + [('Connection', 'close')]


def _unsent(sock):
    """Bytes of ``sock`` not yet acknowledged by the peer (Linux)."""
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ,
                          struct.pack('i', 0))
    except (OSError, AttributeError, ValueError):
        return 0
    return struct.unpack('i', raw)[0]


def _reset(sock, drain_timeout=0.0):
    """Close ``sock`` with a TCP RST (SO_LINGER 0).

    A RST discards what the kernel has not sent yet, so with
    ``drain_timeout`` it first waits (that long at most) until the peer
    has everything written so far: the peer then reads every byte the
    proxy relayed before it sees the reset.
    """
    if sock is None:
        return
    deadline = time.monotonic() + drain_timeout
    while _unsent(sock) and time.monotonic() < deadline:
        time.sleep(0.005)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        struct.pack('ii', 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _close(sock):
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _BodyReader(object):
    """Reads one request body from the client, framed as announced."""

    def __init__(self, sock, rest, headers):
        self._sock = sock
        self._buffer = bytearray(rest)
        values = {n.lower(): v for n, v in headers}
        self.chunked = 'chunked' in values.get('transfer-encoding',
                                               '').lower()
        length = values.get('content-length')
        self._left = int(length) if length and not self.chunked else 0
        self._chunk_left = 0
        self._done = not self.chunked and self._left == 0

    def _fill(self):
        chunk = self._sock.recv(COPY_BYTES)
        if not chunk:
            raise ProxyError('client closed the connection inside a body')
        self._buffer += chunk

    def _take(self, size):
        while len(self._buffer) < size:
            self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _take_some(self, size):
        if not self._buffer:
            self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _line(self):
        while b'\r\n' not in self._buffer:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise ProxyError('chunk header too long')
            self._fill()
        end = self._buffer.index(b'\r\n') + 2
        return self._take(end)

    def read(self):
        """The next raw piece of the body, as sent; b'' at its end."""
        if self._done:
            return b''
        if not self.chunked:
            data = self._take_some(min(self._left, COPY_BYTES))
            self._left -= len(data)
            self._done = self._left == 0
            return data
        if self._chunk_left:
            data = self._take_some(min(self._chunk_left, COPY_BYTES))
            self._chunk_left -= len(data)
            if not self._chunk_left:
                data += self._take(2)           # the CRLF after the data
            return data
        line = self._line()
        size = int(line.split(b';', 1)[0].strip() or b'0', 16)
        if size:
            self._chunk_left = size
            return line
        # The last chunk, then trailers up to a blank line.
        out = bytearray(line)
        while True:
            trailer = self._line()
            out += trailer
            if trailer == b'\r\n':
                break
        self._done = True
        return bytes(out)


# -- the proxy --------------------------------------------------------------

class TCPService(object):
    """Calls ``handler(sock)`` on a daemon thread per connection.

    A plain accept loop on 127.0.0.1 rather than :mod:`socketserver`:
    a process where eventlet has injected green copies of the standard
    library (``http.server`` imported through ``eventlet.green`` brings
    its own ``socketserver``) must not make this service green.

    :param handler: called with each accepted socket, which it owns.
    :param max_connections: connections accepted in all; later ones are
        reset at once and counted by ``refused``.
    :param lifetime: seconds after :meth:`start` when the service stops
        by itself.
    :param on_refuse: called (no arguments) for each refused connection.
    """

    POLL_SECONDS = 0.1

    def __init__(self, handler, name='tcp-service', max_connections=10000,
                 lifetime=300.0, on_refuse=None):
        self._handler = handler
        self._on_refuse = on_refuse
        self.name = name
        self.max_connections = max_connections
        self.lifetime = lifetime
        self.accepted = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._sockets = set()
        self._listener = None
        self._thread = None
        self._stopping = threading.Event()
        self._closed = threading.Event()
        self._started = None
        self._port = None

    @property
    def port(self):
        return self._port

    @property
    def address(self):
        return (HOST, self.port)

    @property
    def running(self):
        return self._listener is not None and not self._closed.is_set()

    def start(self):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        listener.listen(64)
        listener.settimeout(self.POLL_SECONDS)
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._started = time.monotonic()
        self._thread = threading.Thread(
            target=self._accept_loop, daemon=True,
            name='%s-%d' % (self.name, self.port))
        self._thread.start()
        return self

    def _accept_loop(self):
        try:
            while not self._stopping.is_set():
                if time.monotonic() - self._started > self.lifetime:
                    break
                try:
                    sock, _peer = self._listener.accept()
                except socket.timeout:
                    continue
                except OSError:
                    break
                self._dispatch(sock)
        finally:
            self._shut()

    def _dispatch(self, sock):
        with self._lock:
            self.accepted += 1
            over = self.accepted > self.max_connections
            if over:
                self.refused += 1
        if over or not self.track(sock):
            if self._on_refuse is not None:
                self._on_refuse()
            _reset(sock)
            return
        threading.Thread(target=self._run_handler, args=(sock,),
                         daemon=True, name='%s-conn' % self.name).start()

    def _run_handler(self, sock):
        try:
            self._handler(sock)
        finally:
            self.untrack(sock)

    def track(self, sock):
        """Close ``sock`` when the service stops; False when stopped."""
        with self._lock:
            if self._stopping.is_set():
                return False
            self._sockets.add(sock)
            return True

    def untrack(self, sock):
        with self._lock:
            self._sockets.discard(sock)

    def _shut(self):
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            _close(sock)
        self._closed.set()

    def stop(self, timeout=5.0):
        """Stop accepting and close every open socket; idempotent."""
        if self._listener is None:
            return
        self._stopping.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if not self._closed.is_set():
            self._shut()


class FaultProxy(object):
    """Forwards 127.0.0.1:<port> to ``upstream``, applying rules.

    :param upstream: ``http://host:port`` or ``(host, port)`` of the real
        server.
    :param timeout: seconds any socket operation may wait.
    :param lifetime: seconds after :meth:`start` when the proxy stops
        by itself.
    :param max_connections: connections accepted in all; later ones
        are reset at once (counted as ``refused``).
    :param max_records: requests kept in :attr:`requests`.
    """

    def __init__(self, upstream, timeout=30.0, lifetime=300.0,
                 max_connections=10000, max_records=10000):
        if isinstance(upstream, str):
            parsed = urllib.parse.urlsplit(upstream)
            upstream = (parsed.hostname, parsed.port or 80)
        self.upstream = tuple(upstream)
        self.timeout = timeout
        self.max_records = max_records
        self.counters = collections.Counter()
        self.requests = []
        self.rules = []
        self._lock = threading.Lock()
        self._service = TCPService(self._handle, name='fault-proxy',
                                   max_connections=max_connections,
                                   lifetime=lifetime,
                                   on_refuse=lambda: self._count('refused'))

    # -- life cycle ----------------------------------------------------------

    @property
    def port(self):
        return self._service.port

    @property
    def endpoint(self):
        return 'http://%s:%d' % (HOST, self.port)

    @property
    def running(self):
        return self._service.running

    def start(self):
        self._service.start()
        return self

    def stop(self, timeout=5.0):
        """Stop accepting, close every open socket; idempotent."""
        self._service.stop(timeout)

    # -- rules and records ---------------------------------------------------

    def add_rule(self, action, **match):
        """Add a :class:`Rule` (see its parameters); return it."""
        rule = Rule(action, **match)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear_rules(self):
        with self._lock:
            self.rules = []

    def _choose(self, request):
        with self._lock:
            for rule in self.rules:
                if rule.take(request):
                    request.action = rule.action.kind
                    request.rule = rule.name
                    return rule.action
        return PASS

    def _count(self, name, amount=1):
        with self._lock:
            self.counters[name] += amount

    def _record(self, request):
        with self._lock:
            self.counters['requests'] += 1
            self.counters[request.action] += 1
            if request.rule:
                self.counters['rule:%s' % request.rule] += 1
            if len(self.requests) < self.max_records:
                self.requests.append(request)

    def seen(self, method=None, path=None, action=None):
        """The recorded requests that match (``path``: a regex)."""
        pattern = re.compile(path) if path else None
        with self._lock:
            records = list(self.requests)
        return [r for r in records
                if (method is None or r.method == method)
                and (pattern is None or pattern.search(r.key))
                and (action is None or r.action == action)]

    # -- one connection ------------------------------------------------------

    def _handle(self, client):
        self._count('connections')
        sockets = {'client': client, 'upstream': None}
        try:
            client.settimeout(self.timeout)
            self._serve_one(sockets)
        except _InjectedReset:
            self._reset_all(sockets)
        except (OSError, EOFError, ProxyError):
            # EOFError: eventlet's reads on a socket closed by stop().
            self._count('broken')
            self._reset_all(sockets)
        finally:
            # Closed normally only when not reset: a shutdown after
            # the reset would send the FIN the reset is there to avoid.
            for sock in sockets.values():
                if sock is not None:
                    self._service.untrack(sock)
                    _close(sock)

    def _reset_all(self, sockets):
        for name in ('upstream', 'client'):
            sock, sockets[name] = sockets[name], None
            if sock is not None:
                self._service.untrack(sock)
                _reset(sock, self.timeout)

    def _serve_one(self, sockets):
        """Handle the one request of a client connection."""
        client = sockets['client']
        head, rest = _recv_head(client)
        if head is None:
            return
        start, headers = _parse_head(head)
        try:
            method, target, version = start.split(' ', 2)
        except ValueError:
            raise ProxyError('malformed request line %r' % start)
        path, _sep, query = target.partition('?')
        request = Request(method=method.upper(), path=path, query=query,
                          headers={n.lower(): v for n, v in headers})
        action = self._choose(request)
        self._record(request)
        body = _BodyReader(client, rest, headers)
        expects = (request.headers.get('expect', '').lower()
                   == '100-continue')
        if action.kind == 'respond':
            if not expects:
                while body.read():
                    pass
            self._send_error(client, request, action)
            return
        if expects:
            client.sendall(b'HTTP/1.1 100 Continue\r\n\r\n')
        upstream = sockets['upstream'] = self._connect()
        upstream.sendall(_build_head(
            '%s %s %s' % (method, target, version), _close_headers(headers)))
        if action.kind == 'reset_request':
            self._forward_partial_body(body, upstream, action.after_bytes)
        while True:
            data = body.read()
            if not data:
                break
            upstream.sendall(data)
        self._relay_response(upstream, client, action)

    def _connect(self):
        try:
            upstream = socket.create_connection(self.upstream,
                                                timeout=self.timeout)
        except OSError as e:
            self._count('upstream_errors')
            raise ProxyError('cannot reach the upstream server: %s' % e)
        if not self._service.track(upstream):
            _close(upstream)
            raise ProxyError('the proxy is stopping')
        return upstream

    def _forward_partial_body(self, body, upstream, limit):
        sent = 0
        while sent < limit:
            data = body.read()
            if not data:
                break
            data = data[:limit - sent]
            upstream.sendall(data)
            sent += len(data)
        self._count('request_bytes_before_reset', sent)
        raise _InjectedReset()

    def _relay_response(self, upstream, client, action):
        head, rest = _recv_head(upstream)
        if head is None:
            raise ProxyError('the upstream server closed without answering')
        start, headers = _parse_head(head)
        client.sendall(_build_head(start, _close_headers(headers)))
        limit = (action.after_bytes if action.kind == 'reset_response'
                 else None)
        sent = 0
        data = rest
        while True:
            if limit is not None and sent + len(data) >= limit:
                # Counted first: the client may act as soon as it reads.
                self._count('response_bytes_before_reset', limit)
                client.sendall(data[:limit - sent])
                raise _InjectedReset()
            if data:
                client.sendall(data)
                sent += len(data)
            data = upstream.recv(COPY_BYTES)
            if not data:
                break
        if limit is not None:
            # The body ended before the reset point: reset anyway.
            self._count('response_bytes_before_reset', sent)
            raise _InjectedReset()

    def _send_error(self, client, request, action):
        with self._lock:
            number = self.counters['requests']
        request_id = 'FAULTPROXY%08d' % number
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                '<Error><Code>%s</Code><Message>%s</Message>'
                '<Resource>%s</Resource><RequestId>%s</RequestId></Error>'
                % (action.code, action.message, request.path, request_id)
                ).encode('utf-8')
        headers = [('Content-Type', 'application/xml'),
                   ('Content-Length', str(len(body))),
                   ('x-amz-request-id', request_id),
                   ('Date', time.strftime('%a, %d %b %Y %H:%M:%S GMT',
                                          time.gmtime())),
                   ('Connection', 'close')]
        if action.status == 503 and action.code == 'SlowDown':
            headers.append(('Retry-After', '0'))
        start = 'HTTP/1.1 %d %s' % (action.status,
                                    _REASONS.get(action.status, 'Error'))
        payload = _build_head(start, headers)
        if request.method != 'HEAD':
            payload += body
        client.sendall(payload)


class FaultProxyFixture(fixtures.Fixture):
    """A started :class:`FaultProxy`, stopped at clean-up.

    Attributes: ``proxy``, ``endpoint``.
    """

    def __init__(self, upstream, **kwargs):
        super().__init__()
        self._upstream = upstream
        self._kwargs = kwargs

    def _setUp(self):
        self.proxy = FaultProxy(self._upstream, **self._kwargs)
        self.proxy.start()
        self.addCleanup(self.proxy.stop)
        self.endpoint = self.proxy.endpoint
