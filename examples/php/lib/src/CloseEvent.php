<?php

declare(strict_types=1);

namespace WsBridge;

/**
 * The connection is gone; sent once for every accepted connection. userId, meta and channels are
 * its last state. A reply may only publish (the connection cannot be sent to any more).
 */
final class CloseEvent extends Event
{
    /** The values of $initiator (docs/PROTOCOL.md, "initiator"). */
    public const INITIATOR_CLIENT = 'client';
    public const INITIATOR_PHP = 'php';
    public const INITIATOR_API = 'api';
    public const INITIATOR_SERVER = 'server';
    public const INITIATOR_SHUTDOWN = 'shutdown';
    public const INITIATOR_SLOW_CONSUMER = 'slow_consumer';
    /**
     * The connection's node died (kill -9, power loss, partition) and a surviving node sends
     * this close for it, code 1006: exactly once per connection, the same event_id on retries.
     */
    public const INITIATOR_NODE_LOST = 'node_lost';

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
