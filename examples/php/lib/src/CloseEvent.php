<?php

declare(strict_types=1);

namespace WsBridge;

/**
 * The connection is gone; sent once for every accepted connection. userId, meta and channels are
 * its last state. A reply may only publish (the connection cannot be sent to any more).
 */
final class CloseEvent extends Event
{
    public function __construct(
        string $eventId,
        string $connectionId,
        string $userId,
        ?array $meta,
        array $channels,
        string $time,
        string $transport,
        /** WebSocket close code; 1006 when the socket ended without a close frame. */
        public readonly int $code,
        public readonly string $reason,
        /** client, php, api, server, shutdown, slow_consumer or node_lost. */
        public readonly string $initiator,
        public readonly int $durationMs,
        public readonly int $messagesIn,
        public readonly int $messagesOut,
    ) {
        parent::__construct($eventId, $connectionId, $userId, $meta, $channels, $time, $transport);
    }

    public function type(): string
    {
        return 'close';
    }
}
