<?php

declare(strict_types=1);

namespace WsBridge;

/** The push API could not be reached or did not answer in time (curl's error in the message). */
final class TransportException extends ClientException
{
}
