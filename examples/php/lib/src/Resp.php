<?php

declare(strict_types=1);

namespace WsBridge;

/**
 * The little of RESP (the Redis protocol) that RedisPublisher needs when php-redis is not
 * loaded: commands as arrays of bulk strings, and the replies Redis sends to AUTH, SELECT and
 * PUBLISH (and to SUBSCRIBE, for the tests). https://redis.io/docs/latest/develop/reference/protocol-spec/
 *
 * @internal
 */
final class Resp
{
    /** Longest reply line read (a status or an error); Redis's are short. */
    private const MAX_LINE = 64 * 1024;

    /** A command as RESP: *<count>, then each argument as $<bytes> and the bytes, binary-safe. */
    public static function command(string ...$args): string
    {
        $out = '*' . count($args) . "\r\n";
        foreach ($args as $a) {
            $out .= '$' . strlen($a) . "\r\n" . $a . "\r\n";
        }
        return $out;
    }

    /**
     * Reads one reply from $stream: a status as a string, an integer as int, a bulk string as
     * a string (null for a null bulk), an array as a list. An error reply throws, with Redis's
     * message.
     *
     * @param resource $stream
     * @return string|int|null|list<mixed>
     */
    public static function read($stream): string|int|array|null
    {
        $line = self::line($stream);
        $type = $line[0];
        $rest = substr($line, 1);
        switch ($type) {
            case '+':
                return $rest;
            case '-':
                throw new PublisherException("redis: $rest");
            case ':':
                return self::int($rest, $line);
            case '$':
                $n = self::int($rest, $line);
                if ($n === -1) {
                    return null;
                }
                if ($n < 0) {
                    throw new PublisherException("redis: bad bulk length in reply \"$line\"");
                }
                $data = self::bytes($stream, $n + 2);
                if (substr($data, -2) !== "\r\n") {
                    throw new PublisherException('redis: bulk string not followed by CRLF');
                }
                return substr($data, 0, $n);
            case '*':
                $n = self::int($rest, $line);
                if ($n === -1) {
                    return null;
                }
                $out = [];
                for ($i = 0; $i < $n; $i++) {
                    $out[] = self::read($stream);
                }
                return $out;
            default:
                throw new PublisherException('redis: not a RESP reply: ' . json_encode(substr($line, 0, 40)));
        }
    }

    /** @param resource $stream */
    private static function line($stream): string
    {
        $line = fgets($stream, self::MAX_LINE);
        if ($line === false) {
            $meta = stream_get_meta_data($stream);
            throw new PublisherException($meta['timed_out'] ? 'redis: no reply in time' : 'redis: connection closed before a reply');
        }
        if (!str_ends_with($line, "\r\n") || strlen($line) < 3) {
            throw new PublisherException('redis: malformed reply line: ' . json_encode(substr($line, 0, 40)));
        }
        return substr($line, 0, -2);
    }

    /** @param resource $stream */
    private static function bytes($stream, int $n): string
    {
        $data = '';
        while (strlen($data) < $n) {
            $chunk = fread($stream, $n - strlen($data));
            if ($chunk === false || $chunk === '') {
                $meta = stream_get_meta_data($stream);
                throw new PublisherException($meta['timed_out'] ? 'redis: no reply in time' : 'redis: connection closed in the middle of a reply');
            }
            $data .= $chunk;
        }
        return $data;
    }

    private static function int(string $s, string $line): int
    {
        if (preg_match('/^-?\d{1,18}$/', $s) !== 1) {
            throw new PublisherException("redis: bad integer in reply \"$line\"");
        }
        return (int) $s;
    }
}
