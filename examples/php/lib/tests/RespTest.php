<?php

declare(strict_types=1);

namespace WsBridge\Tests;

use PHPUnit\Framework\TestCase;
use WsBridge\PublisherException;
use WsBridge\Resp;

/** RESP encoding and the replies RedisPublisher reads, without a server. */
final class RespTest extends TestCase
{
    /** @return array<string, array{list<string>, string}> */
    public static function commands(): array
    {
        return [
            'PUBLISH' => [['PUBLISH', 'wsbridge:publish', '{"to":{"all":true},"data":"hi"}'],
                "*3\r\n\$7\r\nPUBLISH\r\n\$16\r\nwsbridge:publish\r\n\$31\r\n{\"to\":{\"all\":true},\"data\":\"hi\"}\r\n"],
            'AUTH with user' => [['AUTH', 'app', 'pw'], "*3\r\n\$4\r\nAUTH\r\n\$3\r\napp\r\n\$2\r\npw\r\n"],
            'empty argument' => [['SELECT', ''], "*2\r\n\$6\r\nSELECT\r\n\$0\r\n\r\n"],
            // Lengths are bytes, not characters, and CRLF inside an argument is just data.
            'multibyte and CRLF' => [['PUBLISH', 'c', "é\r\n✓"], "*3\r\n\$7\r\nPUBLISH\r\n\$1\r\nc\r\n\$7\r\né\r\n✓\r\n"],
            'binary' => [['PUBLISH', 'c', "\x00\xff"], "*3\r\n\$7\r\nPUBLISH\r\n\$1\r\nc\r\n\$2\r\n\x00\xff\r\n"],
        ];
    }

    /**
     * @dataProvider commands
     * @param list<string> $args
     */
    public function testCommand(array $args, string $want): void
    {
        self::assertSame($want, Resp::command(...$args));
    }

    /** @return array<string, array{string, mixed}> */
    public static function replies(): array
    {
        return [
            'status' => ["+OK\r\n", 'OK'],
            'integer' => [":3\r\n", 3],
            'zero receivers' => [":0\r\n", 0],
            'bulk' => ["\$5\r\nhe\r\nl\r\n", "he\r\nl"],
            'empty bulk' => ["\$0\r\n\r\n", ''],
            'null bulk' => ["\$-1\r\n", null],
            'subscribe confirmation' => ["*3\r\n\$9\r\nsubscribe\r\n\$1\r\nc\r\n:1\r\n", ['subscribe', 'c', 1]],
        ];
    }

    /** @dataProvider replies */
    public function testRead(string $wire, mixed $want): void
    {
        self::assertSame($want, Resp::read(self::stream($wire)));
    }

    /** @return array<string, array{string, string}> */
    public static function badReplies(): array
    {
        return [
            'error reply' => ["-WRONGPASS invalid username-password pair\r\n", 'redis: WRONGPASS invalid username-password pair'],
            'closed before a reply' => ['', 'connection closed before a reply'],
            'no CRLF' => ["+OK\n", 'malformed reply line'],
            'unknown type' => ["HTTP/1.1 400 Bad Request\r\n", 'not a RESP reply'],
            'bad integer' => [":3x\r\n", 'bad integer'],
            'short bulk' => ["\$10\r\nabc", 'closed in the middle of a reply'],
            'bulk without CRLF' => ["\$3\r\nabcde", 'not followed by CRLF'],
            'negative bulk length' => ["\$-2\r\n", 'bad bulk length'],
        ];
    }

    /** @dataProvider badReplies */
    public function testReadRefuses(string $wire, string $want): void
    {
        $this->expectException(PublisherException::class);
        $this->expectExceptionMessage($want);
        Resp::read(self::stream($wire));
    }

    /** @return resource */
    private static function stream(string $bytes)
    {
        $s = fopen('php://memory', 'r+');
        fwrite($s, $bytes);
        rewind($s);
        return $s;
    }
}
