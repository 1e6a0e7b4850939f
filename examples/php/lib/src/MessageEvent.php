<?php

declare(strict_types=1);

namespace WsBridge;

/** One frame from the client. Frames of one connection arrive one at a time, in order. */
final class MessageEvent extends Event
{
    public function __construct(
        string $eventId,
        string $connectionId,
        string $userId,
        ?array $meta,
        array $channels,
        string $time,
        string $transport,
        /** The text, or the bytes of a binary frame (already base64-decoded). */
        public readonly string $data,
        public readonly bool $binary,
        /** 1 for the connection's first message, then 2, 3, ... */
        public readonly int $seq,
    ) {
        parent::__construct($eventId, $connectionId, $userId, $meta, $channels, $time, $transport);
    }

    public function type(): string
    {
        return 'message';
    }

    /**
     * The text frame decoded as JSON (for apps whose messages are typed JSON objects).
     *
     * @throws ProtocolException for a binary frame or text that is not a JSON object
     * @return array<string, mixed>
     */
    public function json(): array
    {
        if ($this->binary) {
            throw new ProtocolException('a binary frame is not JSON');
        }
        $v = json_decode($this->data, true, 64);
        if (!is_array($v) || array_is_list($v) && $v !== []) {
            throw new ProtocolException('the message is not a JSON object');
        }
        return $v;
    }
}
