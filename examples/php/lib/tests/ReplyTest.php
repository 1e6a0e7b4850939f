<?php

declare(strict_types=1);

namespace WsBridge\Tests;

use PHPUnit\Framework\TestCase;
use WsBridge\Publication;
use WsBridge\Reply;

final class ReplyTest extends TestCase
{
    public function testEmptyAcceptIs204(): void
    {
        $r = Reply::accept();
        self::assertSame(204, $r->status());
        self::assertSame('', $r->body());
    }

    public function testFullOpenReply(): void
    {
        $r = Reply::accept()
            ->user('42')
            ->meta(['name' => 'Ann', 'role' => 'admin'])
            ->join('room:42', 'user:42')
            ->leave('lobby')
            ->send('{"type":"welcome"}', 'second')
            ->sendBinary("\x00\xffbin")
            ->publish(Publication::text('{"type":"joined"}')->toChannels('room:42')->except('n.C1'))
            ->subprotocol('chat.v1')
            ->close(4000, 'bye');
        self::assertSame(200, $r->status());
        self::assertSame([
            'user_id' => '42',
            'meta' => ['name' => 'Ann', 'role' => 'admin'],
            'join' => ['room:42', 'user:42'],
            'leave' => ['lobby'],
            'send' => ['{"type":"welcome"}', 'second', ['data_base64' => base64_encode("\x00\xffbin")]],
            'publish' => [['to' => ['channels' => ['room:42']], 'except' => 'n.C1', 'data' => '{"type":"joined"}']],
            'subprotocol' => 'chat.v1',
            'close' => ['code' => 4000, 'reason' => 'bye'],
        ], json_decode($r->body(), true));
    }

    public function testEmptyMetaIsAnObjectAndNullClears(): void
    {
        self::assertSame('{"meta":{}}', Reply::accept()->meta([])->body());
        self::assertSame('{"meta":null}', Reply::accept()->meta(null)->body());
    }

    public function testUnicodeAndSlashesStayReadable(): void
    {
        self::assertSame('{"send":["héllo </b>"]}', Reply::accept()->send('héllo </b>')->body());
    }

    public function testReject(): void
    {
        $r = Reply::reject(401, 'log in first');
        self::assertSame(401, $r->status());
        self::assertSame('log in first', $r->body());
        $this->expectException(\InvalidArgumentException::class);
        Reply::reject(200);
    }

    public function testPublicationTargets(): void
    {
        self::assertSame(
            ['to' => ['connections' => ['a.1'], 'users' => ['7', '8'], 'channels' => ['c'], 'all' => true], 'data_base64' => base64_encode("\x01\x02")],
            Publication::binary("\x01\x02")->toConnections('a.1')->toUsers('7')->toUsers('8')->toChannels('c')->toAll()->toArray(),
        );
        $this->expectException(\LogicException::class);
        Publication::text('nobody')->toArray();
    }
}
