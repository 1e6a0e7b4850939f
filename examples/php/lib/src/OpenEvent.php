<?php

declare(strict_types=1);

namespace WsBridge;

/**
 * A browser wants to connect. Sent before the upgrade: answer Reply::reject() to refuse it with
 * a real HTTP status, Reply::accept() to let it in.
 */
final class OpenEvent extends Event
{
    public function __construct(
        string $eventId,
        string $connectionId,
        string $userId,
        ?array $meta,
        array $channels,
        string $time,
        string $transport,
        public readonly Request $request,
        /** What the client asks to resume; null when it asks nothing (docs/PROTOCOL.md). */
        public readonly ?Resume $resume = null,
    ) {
        parent::__construct($eventId, $connectionId, $userId, $meta, $channels, $time, $transport);
    }

    public function type(): string
    {
        return 'open';
    }
}
