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

"""The fault proxy of the S3 fault tests, against a small HTTP server."""

import contextlib
import hashlib
import http.client
import socket
import time

import ddt
import testtools

from cinder_chunked_ext.tests import fault_proxy


def blob(size):
    """``size`` deterministic bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b'%d' % counter).digest()
        counter += 1
    return bytes(out[:size])


def dechunk(raw):
    """The payload of a chunked body (``raw`` holds all of it)."""
    data = bytearray()
    while True:
        line, raw = raw.split(b'\r\n', 1)
        size = int(line.split(b';')[0], 16)
        if not size:
            return bytes(data)
        data += raw[:size]
        raw = raw[size + 2:]


class Upstream(object):
    """A small HTTP server: GET/HEAD /blob/<size>, PUT and GET /obj/..."""

    def __init__(self):
        self.objects = {}
        self.seen = []
        self.broken = []
        self.service = fault_proxy.TCPService(self._handle, name='upstream')

    @property
    def address(self):
        return self.service.address

    def _handle(self, sock):
        sock.settimeout(5)
        try:
            self._serve(sock)
        except (OSError, EOFError, fault_proxy.ProxyError):
            pass
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def _serve(self, sock):
        head, rest = fault_proxy._recv_head(sock)
        if head is None:
            return
        start, headers = fault_proxy._parse_head(head)
        method, path, _version = start.split(' ', 2)
        self.seen.append((method, path, {n.lower(): v for n, v in headers}))
        if method == 'PUT':
            body = fault_proxy._BodyReader(sock, rest, headers)
            raw = bytearray()
            try:
                for piece in iter(body.read, b''):
                    raw += piece
            except (OSError, fault_proxy.ProxyError):
                self.broken.append(path)
                return
            self.objects[path] = dechunk(bytes(raw)) if body.chunked \
                else bytes(raw)
            self._reply(sock, 200)
        elif path.startswith('/blob/'):
            self._reply(sock, 200, blob(int(path.split('/')[2])),
                        head_only=method == 'HEAD')
        elif path in self.objects:
            self._reply(sock, 200, self.objects[path])
        else:
            self._reply(sock, 404, b'<Error><Code>NoSuchKey</Code></Error>')

    @staticmethod
    def _reply(sock, status, body=b'', head_only=False):
        head = ('HTTP/1.1 %d X\r\nContent-Length: %d\r\n'
                'ETag: "%s"\r\nConnection: close\r\n\r\n'
                % (status, len(body), hashlib.md5(body).hexdigest()))
        sock.sendall(head.encode('ascii') + (b'' if head_only else body))


@ddt.ddt
class FaultProxyTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.upstream = Upstream()
        self.upstream.service.start()
        self.addCleanup(self.upstream.service.stop)
        fixture = self.useFixture(fault_proxy.FaultProxyFixture(
            self.upstream.address, timeout=5))
        self.proxy = fixture.proxy

    def connection(self):
        conn = http.client.HTTPConnection('127.0.0.1', self.proxy.port,
                                          timeout=5)
        self.addCleanup(conn.close)
        return conn

    def request(self, method, path, body=None, headers=None, conn=None):
        conn = conn or self.connection()
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()

    @contextlib.contextmanager
    def assertBroken(self):
        """The block must fail as a broken connection makes it fail."""
        try:
            yield
        except (http.client.HTTPException, ConnectionError) as e:
            self.broken_with = e
            return
        self.fail('the connection did not break')

    def wait_for(self, predicate, timeout=5):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                self.fail('condition not reached in %s s' % timeout)
            time.sleep(0.01)

    # -- pass -----------------------------------------------------------------

    def test_get_without_rules_passes_body_and_forces_close(self):
        response, data = self.request('GET', '/blob/300000')
        self.assertEqual(200, response.status)
        self.assertEqual(blob(300000), data)
        self.assertEqual('close', response.getheader('Connection'))
        self.assertEqual(1, self.proxy.counters['pass'])
        self.assertEqual(1, self.proxy.counters['requests'])
        self.assertEqual('close', self.upstream.seen[0][2]['connection'])

    def test_put_body_reaches_upstream_intact(self):
        data = blob(1000003)
        response, _ = self.request('PUT', '/obj/a', body=data)
        self.assertEqual(200, response.status)
        self.assertEqual(data, self.upstream.objects['/obj/a'])
        self.assertEqual(['PUT'], [r.method for r in self.proxy.requests])
        self.assertEqual('/obj/a', self.proxy.requests[0].path)
        self.assertEqual('1000003',
                         self.proxy.requests[0].headers['content-length'])

    def test_chunked_put_body_reaches_upstream_intact(self):
        data = [blob(70000), b'x' * 5, blob(3)]
        # http.client sends an iterable without a length chunked.
        response, _ = self.request('PUT', '/obj/c', body=iter(data))
        self.assertEqual(200, response.status)
        self.assertEqual('chunked', self.proxy.requests[0].headers[
            'transfer-encoding'])
        self.assertEqual(b''.join(data), self.upstream.objects['/obj/c'])

    def test_expect_continue_answered_by_proxy_and_not_forwarded(self):
        sock = socket.create_connection(('127.0.0.1', self.proxy.port),
                                        timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(b'PUT /obj/e HTTP/1.1\r\nHost: x\r\n'
                     b'Content-Length: 4\r\nExpect: 100-continue\r\n\r\n')
        self.assertTrue(sock.recv(100).startswith(b'HTTP/1.1 100'))
        sock.sendall(b'data')
        reply = b''
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        self.assertTrue(reply.startswith(b'HTTP/1.1 200'), reply)
        self.assertEqual(b'data', self.upstream.objects['/obj/e'])
        self.assertNotIn('expect', self.upstream.seen[0][2])

    def test_keep_alive_client_reconnects_for_each_request(self):
        conn = self.connection()
        for _ in range(3):
            response, data = self.request('GET', '/blob/10', conn=conn)
            self.assertEqual(blob(10), data)
        self.assertEqual(3, self.proxy.counters['connections'])
        self.assertEqual(3, self.proxy.counters['pass'])

    def test_head_passes_without_body(self):
        response, data = self.request('HEAD', '/blob/500')
        self.assertEqual(200, response.status)
        self.assertEqual('500', response.getheader('Content-Length'))
        self.assertEqual(b'', data)

    # -- respond --------------------------------------------------------------

    @ddt.data((503, 'SlowDown'), (500, 'InternalError'),
              (503, 'ServiceUnavailable'))
    @ddt.unpack
    def test_respond_rule_answers_s3_error_without_upstream(self, status,
                                                            code):
        self.proxy.add_rule(fault_proxy.respond(status, code), method='GET')
        response, data = self.request('GET', '/blob/10')
        self.assertEqual(status, response.status)
        self.assertIn(b'<Code>%s</Code>' % code.encode(), data)
        self.assertIn(b'<Resource>/blob/10</Resource>', data)
        self.assertEqual('application/xml',
                         response.getheader('Content-Type'))
        self.assertEqual([], self.upstream.seen)
        self.assertEqual(1, self.proxy.counters['respond'])

    def test_respond_to_put_drains_body_and_stores_nothing(self):
        self.proxy.add_rule(fault_proxy.respond(500), method='PUT')
        response, data = self.request('PUT', '/obj/r', body=blob(200000))
        self.assertEqual(500, response.status)
        self.assertIn(b'<Code>InternalError</Code>', data)
        self.assertEqual({}, self.upstream.objects)

    def test_respond_to_expect_continue_skips_body(self):
        self.proxy.add_rule(fault_proxy.respond(503, 'SlowDown'))
        sock = socket.create_connection(('127.0.0.1', self.proxy.port),
                                        timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(b'PUT /obj/e HTTP/1.1\r\nHost: x\r\n'
                     b'Content-Length: 4\r\nExpect: 100-continue\r\n\r\n')
        reply = sock.recv(4096)
        self.assertTrue(reply.startswith(b'HTTP/1.1 503'), reply)
        self.assertIn(b'Retry-After: 0', reply)

    def test_respond_to_head_sends_no_body(self):
        self.proxy.add_rule(fault_proxy.respond(503), method='HEAD')
        response, data = self.request('HEAD', '/blob/10')
        self.assertEqual(503, response.status)
        self.assertEqual(b'', data)

    def test_times_and_skip_bound_the_rule(self):
        rule = self.proxy.add_rule(fault_proxy.respond(503), times=2, skip=1)
        statuses = [self.request('GET', '/blob/1')[0].status
                    for _ in range(5)]
        self.assertEqual([200, 503, 503, 200, 200], statuses)
        self.assertEqual(5, rule.seen)
        self.assertEqual(2, rule.applied)
        self.assertTrue(rule.exhausted)
        self.assertEqual(2, self.proxy.counters['respond'])
        self.assertEqual(3, self.proxy.counters['pass'])

    def test_rules_match_method_path_and_query(self):
        self.proxy.add_rule(fault_proxy.respond(500), method='PUT',
                            path=r'/obj/p$', query='', name='plain-put')
        self.proxy.add_rule(fault_proxy.respond(503), path='parts',
                            query=r'partNumber=\d+', name='part')
        self.assertEqual(200, self.request('GET', '/blob/1')[0].status)
        self.assertEqual(500, self.request('PUT', '/obj/p', b'1')[0].status)
        self.assertEqual(200,
                         self.request('PUT', '/obj/p?x=1', b'1')[0].status)
        self.assertEqual(
            503, self.request('PUT', '/obj/parts?partNumber=2&uploadId=u',
                              b'1')[0].status)
        self.assertEqual(1, self.proxy.counters['rule:plain-put'])
        self.assertEqual(1, self.proxy.counters['rule:part'])
        self.assertEqual(['pass', 'respond', 'pass', 'respond'],
                         [r.action for r in self.proxy.requests])
        self.assertEqual(1, len(self.proxy.seen(method='PUT',
                                                action='respond',
                                                path='^obj/p$')))

    def test_clear_rules_passes_everything(self):
        self.proxy.add_rule(fault_proxy.respond(500))
        self.proxy.clear_rules()
        self.assertEqual(200, self.request('GET', '/blob/1')[0].status)

    # -- resets ---------------------------------------------------------------

    def test_reset_response_breaks_body_after_bytes(self):
        self.proxy.add_rule(fault_proxy.reset_response(100000), times=1)
        conn = self.connection()
        conn.request('GET', '/blob/1000000')
        response = conn.getresponse()
        self.assertEqual(200, response.status)
        self.assertEqual('1000000', response.getheader('Content-Length'))
        received = bytearray()
        try:
            for data in iter(lambda: response.read(4096), b''):
                received += data
        except (http.client.HTTPException, ConnectionError):
            pass    # natively; eventlet's green sockets read a reset as EOF
        # Everything relayed arrives before the reset (at most the last
        # read call's bytes are lost with the error), nothing after it.
        self.assertLessEqual(len(received), 100000)
        self.assertGreater(len(received), 100000 - 4096)
        self.assertEqual(blob(len(received)), bytes(received))
        self.assertEqual(1, self.proxy.counters['reset_response'])
        self.assertEqual(100000,
                         self.proxy.counters['response_bytes_before_reset'])
        # The rule is used up: the next download is whole.
        self.assertEqual(blob(1000000),
                         self.request('GET', '/blob/1000000')[1])

    def test_reset_response_beyond_body_end_delivers_whole_body(self):
        self.proxy.add_rule(fault_proxy.reset_response(1000))
        response, data = self.request('GET', '/blob/10')
        self.assertEqual(blob(10), data)
        self.assertEqual(1, self.proxy.counters['reset_response'])
        # Counted once the proxy sees the body's end, after relaying it.
        self.wait_for(lambda: self.proxy.counters[
            'response_bytes_before_reset'] == 10)

    def test_reset_request_breaks_upload_and_server_stores_nothing(self):
        self.proxy.add_rule(fault_proxy.reset_request(50000), method='PUT')
        conn = self.connection()
        with self.assertBroken():
            conn.request('PUT', '/obj/u', body=blob(2000000))
            conn.getresponse().read()
        self.wait_for(lambda: self.upstream.broken)
        self.assertEqual(['/obj/u'], self.upstream.broken)
        self.assertEqual({}, self.upstream.objects)
        self.assertEqual(
            50000, self.proxy.counters['request_bytes_before_reset'])
        self.assertEqual(1, self.proxy.counters['reset_request'])

    # -- bounds ---------------------------------------------------------------

    def test_unreachable_upstream_resets_client(self):
        free = socket.socket()
        free.bind(('127.0.0.1', 0))
        port = free.getsockname()[1]
        free.close()
        proxy = self.useFixture(fault_proxy.FaultProxyFixture(
            ('127.0.0.1', port), timeout=2)).proxy
        conn = http.client.HTTPConnection('127.0.0.1', proxy.port,
                                          timeout=5)
        self.addCleanup(conn.close)
        with self.assertBroken():
            conn.request('GET', '/blob/1')
            conn.getresponse()
        self.assertEqual(1, proxy.counters['upstream_errors'])

    def test_max_connections_resets_later_connections(self):
        proxy = self.useFixture(fault_proxy.FaultProxyFixture(
            self.upstream.address, max_connections=1)).proxy
        conn = http.client.HTTPConnection('127.0.0.1', proxy.port,
                                          timeout=5)
        self.addCleanup(conn.close)
        conn.request('GET', '/blob/1')
        self.assertEqual(200, conn.getresponse().status)
        with self.assertBroken():
            conn.request('GET', '/blob/1')
            conn.getresponse()
        self.assertEqual(1, proxy.counters['refused'])

    def test_stop_closes_port_and_open_connections(self):
        sock = socket.create_connection(('127.0.0.1', self.proxy.port),
                                        timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(b'GET /blob/1 HTTP/1.1\r\n')     # an unfinished head
        self.wait_for(lambda: self.proxy.counters['connections'] == 1)
        started = time.monotonic()
        self.proxy.stop()
        self.assertLess(time.monotonic() - started, 3)
        self.assertFalse(self.proxy.running)
        self.assertEqual(b'', sock.recv(10))
        self.assertRaises(ConnectionRefusedError, socket.create_connection,
                          ('127.0.0.1', self.proxy.port), 1)
        self.proxy.stop()       # idempotent

    def test_lifetime_stops_proxy_by_itself(self):
        proxy = fault_proxy.FaultProxy(self.upstream.address,
                                       lifetime=0.2).start()
        self.addCleanup(proxy.stop)
        self.assertTrue(proxy.running)
        self.wait_for(lambda: not proxy.running)
        self.assertRaises(ConnectionRefusedError, socket.create_connection,
                          ('127.0.0.1', proxy.port), 1)

    def test_max_records_bounds_request_log(self):
        proxy = self.useFixture(fault_proxy.FaultProxyFixture(
            self.upstream.address, max_records=2)).proxy
        for _ in range(3):
            conn = http.client.HTTPConnection('127.0.0.1', proxy.port,
                                              timeout=5)
            self.addCleanup(conn.close)
            conn.request('GET', '/blob/1')
            conn.getresponse().read()
        self.assertEqual(2, len(proxy.requests))
        self.assertEqual(3, proxy.counters['requests'])

    def test_malformed_request_counted_as_broken(self):
        sock = socket.create_connection(('127.0.0.1', self.proxy.port),
                                        timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(b'NONSENSE\r\nno colon here\r\n\r\n')
        self.wait_for(lambda: self.proxy.counters['broken'] == 1)
        self.assertEqual([], self.upstream.seen)
