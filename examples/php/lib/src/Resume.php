<?php

declare(strict_types=1);

namespace WsBridge;

/**
 * What a client asks to resume (the open event's "resume", docs/PROTOCOL.md "History and
 * recovery"): its last position in every history channel it had. It is information: the
 * channels the connection is in are still the ones the open reply joins, and only those are
 * recovered.
 */
final class Resume
{
    /**
     * @param array<string, array{epoch: string, offset: int}> $positions by channel
     */
    public function __construct(
        public readonly array $positions,
        /** Why the client's token could not be read; nothing is then recovered. */
        public readonly ?string $error,
    ) {
    }

    /** @param array<string, mixed> $d @throws ProtocolException */
    public static function fromArray(array $d): self
    {
        $positions = [];
        foreach (Event::object($d, 'positions') as $channel => $p) {
            if (!is_array($p) || !is_string($p['epoch'] ?? null) || !is_int($p['offset'] ?? null)) {
                throw new ProtocolException('event field "resume.positions" is not an object of {epoch, offset}');
            }
            $positions[(string) $channel] = ['epoch' => $p['epoch'], 'offset' => $p['offset']];
        }
        $error = $d['error'] ?? null;
        if ($error !== null && !is_string($error)) {
            throw new ProtocolException('event field "resume.error" is not a string');
        }
        return new self($positions, $error);
    }
}
