<?php

declare(strict_types=1);

namespace WsBridge;

/**
 * The answer to a webhook (docs/PROTOCOL.md, "Replies"). wsbridge refuses a whole reply with a
 * field not allowed for the event (user_id outside open; anything but publish on close), so
 * build only what the event allows.
 *
 *     Reply::accept()->user('42')->join('room:1')->send(json_encode([...]))->emit($event);
 *     Reply::reject(403, 'log in first')->emit();
 */
final class Reply
{
    /** @var array<string, mixed> */
    private array $fields = [];
    private string $body = '';

    private function __construct(private readonly int $status)
    {
    }

    /** A 2xx answer: accept the open, or act on a message or close. Nothing set = 204. */
    public static function accept(): self
    {
        return new self(200);
    }

    /** Refuses an open handshake: the browser gets this status and body (text/plain). */
    public static function reject(int $status = 403, string $body = ''): self
    {
        if ($status >= 200 && $status < 300) {
            throw new \InvalidArgumentException('a rejection needs a non-2xx status');
        }
        $r = new self($status);
        $r->body = $body;
        return $r;
    }

    /** Open only: who this connection belongs to ("" = anonymous). */
    public function user(string $userId): self
    {
        $this->fields['user_id'] = $userId;
        return $this;
    }

    /** Replaces the stored meta (null clears it); it comes back on every later webhook. */
    public function meta(?array $meta): self
    {
        // An empty PHP array would encode as [] (a list), which is not a JSON object.
        $this->fields['meta'] = $meta === null ? null : (object) $meta;
        return $this;
    }

    public function join(string ...$channels): self
    {
        return $this->append('join', $channels);
    }

    public function leave(string ...$channels): self
    {
        return $this->append('leave', $channels);
    }

    /** Text frames to this connection, in order. */
    public function send(string ...$texts): self
    {
        return $this->append('send', $texts);
    }

    /** A binary frame to this connection. */
    public function sendBinary(string $bytes): self
    {
        return $this->append('send', [['data_base64' => base64_encode($bytes)]]);
    }

    public function publish(Publication ...$publications): self
    {
        return $this->append('publish', array_map(static fn (Publication $p) => $p->toArray(), $publications));
    }

    /** Closes this connection after the send frames; code 1000 or 3000-4999. */
    public function close(int $code = 1000, string $reason = ''): self
    {
        $this->fields['close'] = ['code' => $code, 'reason' => $reason];
        return $this;
    }

    /** Open only: the subprotocol to accept, one the client offered. */
    public function subprotocol(string $name): self
    {
        $this->fields['subprotocol'] = $name;
        return $this;
    }

    public function status(): int
    {
        return $this->status === 200 && $this->fields === [] ? 204 : $this->status;
    }

    /** @return array<string, mixed> the reply's fields as they go on the wire */
    public function toArray(): array
    {
        return $this->fields;
    }

    /** The response body: JSON for an accept with fields, "" for 204, the text of a rejection. */
    public function body(): string
    {
        if ($this->status !== 200) {
            return $this->body;
        }
        return $this->fields === [] ? '' : json_encode($this->fields, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
    }

    /**
     * The response headers: Content-Type when there is a body, and with $for the
     * WsBridge-Event-Id of the event this answers. wsbridge refuses (and retries) an answer
     * naming another event, which catches a server that answers out of turn; without $for
     * nothing is echoed and nothing is checked.
     *
     * @return array<string, string>
     */
    public function headers(?Event $for = null): array
    {
        $h = [];
        if ($this->body() !== '') {
            $h['Content-Type'] = $this->status === 200 ? 'application/json' : 'text/plain; charset=utf-8';
        }
        if ($for !== null) {
            $h['WsBridge-Event-Id'] = $for->eventId;
        }
        return $h;
    }

    /**
     * Sends status, headers and body to the client of this PHP request. Pass the event being
     * answered to echo its id (see headers()).
     */
    public function emit(?Event $for = null): void
    {
        http_response_code($this->status());
        foreach ($this->headers($for) as $name => $value) {
            header("$name: $value");
        }
        echo $this->body();
    }

    /** @param list<mixed> $items */
    private function append(string $field, array $items): self
    {
        $this->fields[$field] = [...($this->fields[$field] ?? []), ...$items];
        return $this;
    }
}
