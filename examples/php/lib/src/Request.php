<?php

declare(strict_types=1);

namespace WsBridge;

/** The WebSocket handshake as the open event describes it (request.*). */
final class Request
{
    /**
     * @param array<string, string> $headers the forwarded handshake headers (WSBRIDGE_FORWARD_HEADERS)
     * @param list<string> $subprotocols offered by the client
     */
    public function __construct(
        public readonly string $method,
        public readonly string $path,
        /** The raw query string, without "?". */
        public readonly string $query,
        public readonly array $headers,
        public readonly string $remoteAddr,
        public readonly array $subprotocols,
    ) {
    }

    /** @param array<string, mixed> $d @throws ProtocolException */
    public static function fromArray(array $d): self
    {
        $headers = Event::object($d, 'headers');
        foreach ($headers as $name => $value) {
            if (!is_string($name) || !is_string($value)) {
                throw new ProtocolException('event field "request.headers" is not an object of strings');
            }
        }
        return new self(
            Event::str($d, 'method'),
            Event::str($d, 'path'),
            Event::str($d, 'query'),
            $headers,
            Event::str($d, 'remote_addr'),
            Event::strings($d, 'subprotocols'),
        );
    }

    /** A forwarded header by name, case-insensitively; null when the client did not send it. */
    public function header(string $name): ?string
    {
        foreach ($this->headers as $key => $value) {
            if (strcasecmp($key, $name) === 0) {
                return $value;
            }
        }
        return null;
    }

    /** @return array<string, mixed> the query string parsed as PHP parses $_GET */
    public function queryParams(): array
    {
        parse_str($this->query, $out);
        return $out;
    }

    /**
     * The handshake's cookies (the Cookie header must be in WSBRIDGE_FORWARD_HEADERS, as it is
     * by default). Parsed by hand: parse_str would mangle names with dots and decode '+'.
     *
     * @return array<string, string>
     */
    public function cookies(): array
    {
        $out = [];
        foreach (explode(';', $this->header('Cookie') ?? '') as $pair) {
            [$name, $value] = array_pad(explode('=', trim($pair), 2), 2, '');
            if ($name !== '' && !array_key_exists($name, $out)) {
                $out[$name] = rawurldecode($value);
            }
        }
        return $out;
    }

    /** The cookie's value, or null. */
    public function cookie(string $name): ?string
    {
        return $this->cookies()[$name] ?? null;
    }
}
