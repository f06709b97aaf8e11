"""The REST face: parse, authenticate, call one domain function, render."""
