<?php

declare(strict_types=1);

namespace WsBridge;

/**
 * A webhook event: the fields every event has (docs/PROTOCOL.md, "Common body fields").
 * OpenEvent, MessageEvent and CloseEvent add their own; `match ($event::class)` or instanceof
 * picks the handler.
 */
abstract class Event
{
    /**
     * @param array<string, mixed>|null $meta what PHP stored last, null until then
     * @param list<string> $channels sorted
     */
    public function __construct(
        /** Unique per event and the same on every retry of it: dedupe on this. */
        public readonly string $eventId,
        public readonly string $connectionId,
        /** "" until PHP set one (an anonymous connection). */
        public readonly string $userId,
        public readonly ?array $meta,
        public readonly array $channels,
        /** RFC 3339 UTC with milliseconds. */
        public readonly string $time,
        /**
         * What the client came by: "ws" (WebSocket), later "sse" or "pusher". "ws" for a body
         * from a bridge older than the field, which had WebSocket only.
         */
        public readonly string $transport = 'ws',
    ) {
    }

    abstract public function type(): string;

    /**
     * Decodes a webhook body.
     *
     * @throws ProtocolException when it is not a wsbridge event
     */
    public static function fromJson(string $body): self
    {
        try {
            $data = json_decode($body, true, 64, JSON_THROW_ON_ERROR);
        } catch (\JsonException $e) {
            throw new ProtocolException('webhook body is not JSON: ' . $e->getMessage(), 0, $e);
        }
        if (!is_array($data) || array_is_list($data) && $data !== []) {
            throw new ProtocolException('webhook body is not a JSON object');
        }
        return self::fromArray($data);
    }

    /**
     * @param array<string, mixed> $d
     * @throws ProtocolException
     */
    public static function fromArray(array $d): self
    {
        $common = [
            self::str($d, 'event_id'),
            self::str($d, 'connection_id'),
            self::str($d, 'user_id'),
            self::objectOrNull($d, 'meta'),
            self::strings($d, 'channels'),
            self::str($d, 'time'),
            array_key_exists('transport', $d) ? self::str($d, 'transport') : 'ws',
        ];
        return match ($d['type'] ?? null) {
            'open' => new OpenEvent(
                ...$common,
                request: Request::fromArray(self::object($d, 'request')),
                resume: array_key_exists('resume', $d) ? Resume::fromArray(self::object($d, 'resume')) : null,
            ),
            'message' => self::message($common, $d),
            'close' => new CloseEvent(
                ...$common,
                code: self::int($d, 'code'),
                reason: self::str($d, 'reason'),
                initiator: self::str($d, 'initiator'),
                durationMs: self::int($d, 'duration_ms'),
                messagesIn: self::int($d, 'messages_in'),
                messagesOut: self::int($d, 'messages_out'),
            ),
            default => throw new ProtocolException('unknown event type ' . json_encode($d['type'] ?? null)),
        };
    }

    /** @param list<mixed> $common */
    private static function message(array $common, array $d): MessageEvent
    {
        $binary = $d['binary'] ?? null;
        if (!is_bool($binary)) {
            throw new ProtocolException('message event: "binary" is not a boolean');
        }
        if ($binary) {
            $data = base64_decode(self::str($d, 'data_base64'), true);
            if ($data === false) {
                throw new ProtocolException('message event: "data_base64" is not base64');
            }
        } else {
            $data = self::str($d, 'data');
        }
        return new MessageEvent(...$common, data: $data, binary: $binary, seq: self::int($d, 'seq'));
    }

    /** @internal shared with Request */
    public static function str(array $d, string $key): string
    {
        if (!is_string($d[$key] ?? null)) {
            throw new ProtocolException("event field \"$key\" is missing or not a string");
        }
        return $d[$key];
    }

    private static function int(array $d, string $key): int
    {
        if (!is_int($d[$key] ?? null)) {
            throw new ProtocolException("event field \"$key\" is missing or not an integer");
        }
        return $d[$key];
    }

    /** @internal shared with Request @return array<string, mixed> */
    public static function object(array $d, string $key): array
    {
        if (!is_array($d[$key] ?? null)) {
            throw new ProtocolException("event field \"$key\" is missing or not an object");
        }
        return $d[$key];
    }

    /** @return array<string, mixed>|null */
    private static function objectOrNull(array $d, string $key): ?array
    {
        if (!array_key_exists($key, $d)) {
            throw new ProtocolException("event field \"$key\" is missing");
        }
        return $d[$key] === null ? null : self::object($d, $key);
    }

    /** @internal shared with Request @return list<string> */
    public static function strings(array $d, string $key): array
    {
        $v = $d[$key] ?? null;
        if (!is_array($v) || !array_is_list($v) || array_filter($v, 'is_string') !== $v) {
            throw new ProtocolException("event field \"$key\" is missing or not a list of strings");
        }
        return $v;
    }
}
