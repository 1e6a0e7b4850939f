<?php

declare(strict_types=1);

// For apps without Composer: `require '/path/to/lib/autoload.php';` maps WsBridge\Foo to
// src/Foo.php, exactly as composer.json's PSR-4 entry does.
spl_autoload_register(static function (string $class): void {
    if (str_starts_with($class, 'WsBridge\\')) {
        $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, 9)) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});
