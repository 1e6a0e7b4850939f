<?php

declare(strict_types=1);

namespace WsBridge;

/** 400: malformed JSON, unknown field, bad target or payload, bad close code. */
final class BadRequestException extends ApiException
{
}
