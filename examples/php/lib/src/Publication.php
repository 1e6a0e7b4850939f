<?php

declare(strict_types=1);

namespace WsBridge;

/**
 * One message to many targets: an item of POST /v1/publish, and of a reply's "publish".
 *
 *     Publication::text($json)->toChannels('room:1')->except($event->connectionId)
 */
final class Publication implements \JsonSerializable
{
    /** @var list<string> */
    private array $connections = [];
    /** @var list<string> */
    private array $users = [];
    /** @var list<string> */
    private array $channels = [];
    private bool $all = false;
    private ?string $except = null;

    private function __construct(private readonly string $data, private readonly bool $binary)
    {
    }

    /** A text frame. */
    public static function text(string $data): self
    {
        return new self($data, false);
    }

    /** A binary frame of these bytes. */
    public static function binary(string $bytes): self
    {
        return new self($bytes, true);
    }

    public function toConnections(string ...$ids): self
    {
        array_push($this->connections, ...$ids);
        return $this;
    }

    /** Every connection (tab, device) of each user. */
    public function toUsers(string ...$ids): self
    {
        array_push($this->users, ...$ids);
        return $this;
    }

    public function toChannels(string ...$names): self
    {
        array_push($this->channels, ...$names);
        return $this;
    }

    /** Every connection on the bridge. */
    public function toAll(): self
    {
        $this->all = true;
        return $this;
    }

    /** Leaves this connection out: "everyone in the room but the sender". */
    public function except(string $connectionId): self
    {
        $this->except = $connectionId;
        return $this;
    }

    /** @return array<string, mixed> the wire form */
    public function toArray(): array
    {
        $to = [];
        foreach (['connections', 'users', 'channels'] as $kind) {
            if ($this->$kind !== []) {
                $to[$kind] = $this->$kind;
            }
        }
        if ($this->all) {
            $to['all'] = true;
        }
        if ($to === []) {
            // wsbridge would refuse it (400); say so where the mistake is made.
            throw new \LogicException('a publication needs a target: toConnections, toUsers, toChannels or toAll');
        }
        $out = ['to' => $to];
        if ($this->except !== null) {
            $out['except'] = $this->except;
        }
        if ($this->binary) {
            $out['data_base64'] = base64_encode($this->data);
        } else {
            $out['data'] = $this->data;
        }
        return $out;
    }

    public function jsonSerialize(): array
    {
        return $this->toArray();
    }
}
