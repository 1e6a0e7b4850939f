<?php

declare(strict_types=1);

namespace WsBridge\Tests;

use PHPUnit\Framework\TestCase;
use WsBridge\PusherChannelAuth;

final class PusherChannelAuthTest extends TestCase
{
    /** The example of Pusher's authorisation docs: key 278d425bdf160c739803, secret 7ad3773142a6692b25b8. */
    public function testPrivateAsPusherDocuments(): void
    {
        $auth = new PusherChannelAuth('278d425bdf160c739803', '7ad3773142a6692b25b8');
        self::assertSame(
            ['auth' => '278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4'],
            $auth->authorizePrivate('1234.1234', 'private-foobar'),
        );
    }

    public function testPresenceAsPusherDocuments(): void
    {
        $auth = new PusherChannelAuth('278d425bdf160c739803', '7ad3773142a6692b25b8');
        $got = $auth->authorizePresence('1234.1234', 'presence-foobar', 10, ['name' => 'Mr. Channels', 'twitter_id' => '@pusher']);
        self::assertSame('{"user_id":10,"user_info":{"name":"Mr. Channels","twitter_id":"@pusher"}}', $got['channel_data']);
        self::assertSame('278d425bdf160c739803:' . hash_hmac('sha256', '1234.1234:presence-foobar:' . $got['channel_data'], '7ad3773142a6692b25b8'), $got['auth']);
    }

    /** @return array<string, array{string, string}> */
    public static function badInput(): array
    {
        return [
            'socket id not digits' => ['abc.def', 'private-a'],
            'socket id without dot' => ['1234', 'private-a'],
            'socket id with newline' => ["1.2\n", 'private-a'],
            'channel with slash' => ['1.2', 'private-a/b'],
            'empty channel' => ['1.2', ''],
        ];
    }

    /** @dataProvider badInput */
    public function testRefusesWhatPusherRefuses(string $socketId, string $channel): void
    {
        $this->expectException(\InvalidArgumentException::class);
        (new PusherChannelAuth('k', 's'))->authorizePrivate($socketId, $channel);
    }
}
