<?php

declare(strict_types=1);

/**
 * Who is a member of which room, in one JSON file under a lock. Rooms are the app's data: the
 * bridge's channels only mirror them for the open connections, so membership survives a
 * reconnect and permission checks never trust the browser. "lobby" always exists and everyone
 * is in it.
 */
final class Rooms
{
    public const LOBBY = 'lobby';

    public function __construct(private readonly string $file)
    {
    }

    /** A valid room name: the browser sends it, so it is checked before use. */
    public static function validName(string $room): bool
    {
        return preg_match('/^[a-z0-9][a-z0-9-]{0,31}$/D', $room) === 1;
    }

    /** @return array<string, list<string>> room => members (lobby: []) */
    public function all(): array
    {
        return $this->locked(LOCK_SH, static fn (array $rooms) => [$rooms, $rooms]);
    }

    public function exists(string $room): bool
    {
        return array_key_exists($room, $this->all());
    }

    public function isMember(string $room, string $user): bool
    {
        $rooms = $this->all();
        return $room === self::LOBBY || in_array($user, $rooms[$room] ?? [], true);
    }

    /** @return list<string> the rooms the user is in, lobby first */
    public function of(string $user): array
    {
        $out = [self::LOBBY];
        foreach ($this->all() as $room => $members) {
            if ($room !== self::LOBBY && in_array($user, $members, true)) {
                $out[] = $room;
            }
        }
        return $out;
    }

    /** Creates a room with its creator as the first member; false if it exists. */
    public function create(string $room, string $user): bool
    {
        return $this->locked(LOCK_EX, static function (array $rooms) use ($room, $user) {
            if (array_key_exists($room, $rooms)) {
                return [$rooms, false];
            }
            $rooms[$room] = [$user];
            return [$rooms, true];
        });
    }

    /** Adds or removes a member; false if the room does not exist or nothing changed. */
    public function setMember(string $room, string $user, bool $member): bool
    {
        if ($room === self::LOBBY) {
            return false; // everyone, always
        }
        return $this->locked(LOCK_EX, static function (array $rooms) use ($room, $user, $member) {
            if (!array_key_exists($room, $rooms) || in_array($user, $rooms[$room], true) === $member) {
                return [$rooms, false];
            }
            $rooms[$room] = $member ? [...$rooms[$room], $user] : array_values(array_diff($rooms[$room], [$user]));
            return [$rooms, true];
        });
    }

    /**
     * Runs $fn on the rooms under a lock; $fn returns [new rooms, result]. Webhooks of different
     * connections run in parallel FPM workers, so every change is read-modify-write under LOCK_EX.
     */
    private function locked(int $mode, callable $fn): mixed
    {
        if (!is_dir(dirname($this->file))) {
            @mkdir(dirname($this->file), 0700, true);
        }
        $fh = fopen($this->file, 'c+');
        if ($fh === false || !flock($fh, $mode)) {
            throw new RuntimeException("cannot lock {$this->file}");
        }
        try {
            $rooms = json_decode((string) stream_get_contents($fh), true);
            $rooms = is_array($rooms) ? $rooms : [];
            $rooms[self::LOBBY] ??= [];
            [$new, $result] = $fn($rooms);
            if ($mode === LOCK_EX && $new !== $rooms) {
                ftruncate($fh, 0);
                rewind($fh);
                fwrite($fh, json_encode($new, JSON_THROW_ON_ERROR));
                fflush($fh);
            }
            return $result;
        } finally {
            flock($fh, LOCK_UN);
            fclose($fh);
        }
    }
}
